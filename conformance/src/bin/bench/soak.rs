//! Mode `soak`: many ADD/DEL pairs through the release binaries, concurrently, with plugin processes
//! SIGKILLed at random points, then a comparison of what the plugins answered with what is on disk, on
//! the node's links and in its nftables ruleset. It measures correctness under failure, not speed.
//!
//! Phase 1 (`--ops` pairs): `plumb-ipam` alone, one process per call as a runtime runs it, from
//! `--workers` threads on one /22 file store. Each worker keeps its last [`IPAM_LIVE`] attachments
//! live, so about a tenth of the pool stays reserved and addresses are reused constantly.
//!
//! Phase 2 (`--bridge-ops` pairs): `plumb-bridge` (which runs `plumb-ipam`) with `macspoofchk: true`
//! inside a node namespace the bench creates, each worker attaching to [`BRIDGE_SLOTS`] container
//! namespaces of its own in turn (DEL of the slot's previous attachment, then ADD of a new one).
//!
//! In both phases each call is SIGKILLed with probability `--kill-rate` %, after a delay drawn uniformly
//! from 0 to the mean lifetime (spawn to exit) of that worker's unkilled calls of that command so far, so
//! kills land at every stage of a call; a SIGKILL that arrives after the process ended is counted apart.
//! In phase 2 half of the kills instead wait until plumb-bridge has started its plumb-ipam child and
//! land 0-2 ms later, the moment a runtime's timeout orphans a delegated plugin. After a killed or failed ADD, and after a killed or failed DEL, the worker does what a
//! runtime does: DEL (again) until it succeeds, at most [`DEL_ATTEMPTS`] times.
//!
//! What is counted (every target must be 0):
//! - duplicates: an ADD answered an address that another live attachment had been answered and not yet
//!   DELed (checked on every ADD result against a shared map of live addresses);
//! - lost: an attachment still live at the end whose record or claim is not on disk as answered (and, in
//!   phase 2, whose host veth, spoof-check chain or container interface is gone);
//! - leaked: records, claims or temporary files on disk, host veths `plb*`, spoof-check chains or
//!   container interfaces that belong to no live attachment, before and after the final DEL of all;
//! - DELs given up after [`DEL_ATTEMPTS`] tries, and failed calls the bench did not kill;
//! - (phase 2) orphaned `plumb-ipam` children that kept running after their `plumb-bridge` was killed:
//!   the bench makes itself a child subreaper, so they are reparented to it, seen and reaped.
//!
//! Everything lives in a temp dir under `PLUMB_BENCH_TMP` and in namespaces the bench creates; all of
//! it is removed at the end, also after an error or Ctrl-C.

use super::bridge::{catch_interrupts, check_interrupt, checked};
use super::{bench_dir, release_binary, warn_if_stale, Options, Stop, Target};
use conformance::plugin::Call;
use conformance::XorShift;
use plumb_ipam::store::{spaces, Entry, FileStore};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "soak_bridge.rs"]
mod bridge_phase;
use bridge_phase::bridge_phase;

/// The pool of phase 1.
const IPAM_SUBNET: &str = "10.33.0.0/22";
/// The CNI network name of both phases.
const NETWORK: &str = "soak";
/// `CNI_IFNAME` of every call.
const IFNAME: &str = "eth0";
/// `CNI_NETNS` of phase 1 (plumb-ipam does not enter it).
const NO_NETNS: &str = "/run/netns/none";
/// Attachments each worker keeps live in phase 1.
const IPAM_LIVE: usize = 8;
/// Container namespaces (and so live attachments) per worker in phase 2.
const BRIDGE_SLOTS: usize = 4;
/// DEL tries after a killed or failed call before the worker gives up on an attachment.
const DEL_ATTEMPTS: u32 = 20;
/// Assumed mean call durations before any call finished: (plumb-ipam, plumb-bridge).
const FIRST_GUESS: [Duration; 2] = [Duration::from_millis(3), Duration::from_millis(30)];

/// Runs both phases and returns their targets; cleanup runs whatever happened.
pub fn run_soak(opts: &Options) -> Result<Vec<Target>, Stop> {
    if !conformance::skip::is_root() {
        return Err(Stop::Error(
            "mode soak needs root (network namespaces, bridges, nftables)".into(),
        ));
    }
    if !conformance::skip::have_command("ip") {
        return Err(Stop::Error("mode soak needs `ip` (apt iproute2)".into()));
    }
    let ipam = release_binary("plumb-ipam")?;
    warn_if_stale(&ipam, &["ipam/src", "plugins/cni/src"]);
    let bridge = release_binary("plumb-bridge")?;
    warn_if_stale(
        &bridge,
        &[
            "plugins/bridge/src",
            "plugins/net/src",
            "plugins/nft/src",
            "plugins/cni/src",
        ],
    );
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let deadline = Instant::now() + Duration::from_secs(opts.deadline as u64);
    println!(
        "soak: {} workers, kill rate {} %, seed {seed} (--seed {seed} repeats the kill choices), no new ADD after {} s",
        opts.workers, opts.kill_rate, opts.deadline
    );
    catch_interrupts();
    let tmp = bench_dir()?;
    println!("temp dir {}", tmp.path().display());
    let mut targets = ipam_phase(opts, &ipam, tmp.path(), seed, deadline)?;
    targets.extend(bridge_phase(opts, &bridge, tmp.path(), seed, deadline)?);
    let path = tmp.path().to_path_buf();
    drop(tmp);
    match path.exists() {
        false => println!("removed {}", path.display()),
        true => println!("warning: could not remove {}", path.display()),
    }
    Ok(targets)
}

// ---------------------------------------------------------------------------------------------------
// One plugin call, maybe killed
// ---------------------------------------------------------------------------------------------------

/// How one plugin process ended.
#[derive(Debug)]
enum Ended {
    /// Exit 0, with its stdout.
    Ok(String),
    /// Died of the bench's SIGKILL.
    Killed,
    /// Any other end: the CNI error code (`None` when stdout held none) and a description.
    Failed(Option<u64>, String),
}

/// When a call is SIGKILLed.
#[derive(Debug, Clone, Copy)]
struct Kill {
    /// Delay before the SIGKILL, from the spawn's return or from when a child was seen.
    delay: Duration,
    /// Wait until the plugin has a child process (a delegated plumb-ipam) before the delay starts; if
    /// it ends without one, no SIGKILL is sent.
    in_child: bool,
}

/// Runs a prepared plugin command with `stdin`; sends SIGKILL as `kill` says, if given. Returns how it
/// ended, whether a SIGKILL was sent, and the time from the spawn's return to the process's end (the
/// span a kill can land in).
fn run_call(
    mut cmd: Command,
    stdin: &[u8],
    kill: Option<Kill>,
) -> Result<(Ended, bool, Duration), String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot spawn: {e}"))?;
    let start = Instant::now();
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // A config is far below the pipe buffer: this does not block; a killed plugin makes it EPIPE.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    let mut sent = false;
    let mut frozen = Vec::new();
    if let Some(k) = kill {
        if !k.in_child || await_child(&mut child) {
            std::thread::sleep(k.delay);
            frozen = freeze_children(child.id());
            sent = child.kill().is_ok();
        }
    }
    let out = match frozen.is_empty() {
        true => child.wait_with_output(),
        // A stopped child may hold the plugin's stdout (forked, not yet exec'd): reap the plugin and
        // continue its children before reading its output, else both wait for each other.
        false => child.wait().and_then(|status| {
            for f in &frozen {
                f.signal(libc::SIGCONT);
            }
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            if let Some(mut p) = child.stdout.take() {
                p.read_to_end(&mut stdout)?;
            }
            if let Some(mut p) = child.stderr.take() {
                p.read_to_end(&mut stderr)?;
            }
            Ok(std::process::Output {
                status,
                stdout,
                stderr,
            })
        }),
    };
    let out = out.map_err(|e| format!("cannot wait: {e}"))?;
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok((Ended::Ok(stdout), sent, took));
    }
    if sent && out.status.signal() == Some(libc::SIGKILL) {
        return Ok((Ended::Killed, sent, took));
    }
    let code = serde_json::from_str::<Value>(&stdout)
        .ok()
        .and_then(|v| v["code"].as_u64());
    let what = format!(
        "{}: stdout={} stderr={}",
        out.status,
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((Ended::Failed(code, what), sent, took))
}

/// Children (pids) of a plugin that had not begun to exit when the bench SIGKILLed the plugin: if one of
/// them later exits by itself, it went on working without its caller.
static RUNNING_AT_KILL: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// `PF_EXITING` in the flags of /proc/<pid>/stat: the process has begun to exit.
const PF_EXITING: u64 = 0x4;

/// A child of a plugin held stopped (SIGSTOP) while the plugin is killed, through a pidfd so that no
/// signal can reach a reused pid.
struct Frozen {
    pidfd: std::os::fd::OwnedFd,
}

impl Frozen {
    /// Sends `sig` through the pidfd.
    fn signal(&self, sig: libc::c_int) {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal with a pidfd we own, a valid signal, no siginfo and no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Stops every child of plugin `pid` (about to be killed) so that none moves on while its parent dies,
/// and notes in [`RUNNING_AT_KILL`] those that had not begun to exit. The caller continues them (SIGCONT)
/// once the plugin is reaped: a child whose caller's death does not kill it then runs on.
fn freeze_children(pid: u32) -> Vec<Frozen> {
    use std::os::fd::FromRawFd;
    let Ok(kids) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return Vec::new();
    };
    let mut frozen = Vec::new();
    for kid in kids
        .split_whitespace()
        .filter_map(|k| k.parse::<i32>().ok())
    {
        // SAFETY: pidfd_open takes a pid and flags; the pid is a child of the live plugin, so it is not
        // reused before the returned descriptor pins it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, kid, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let f = Frozen {
            pidfd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) },
        };
        f.signal(libc::SIGSTOP);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            let Some(st) = proc_stat(kid) else { break };
            if st.flags & PF_EXITING != 0 || matches!(st.state.as_str(), "Z" | "X") {
                break;
            }
            if matches!(st.state.as_str(), "T" | "t") {
                RUNNING_AT_KILL.lock().expect("running").insert(kid);
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        frozen.push(f);
    }
    frozen
}

/// Fields of /proc/<pid>/stat the soak reads.
#[derive(Debug)]
struct ProcStat {
    comm: String,
    state: String,
    ppid: i32,
    /// The kernel's task flags (see [`PF_EXITING`]).
    flags: u64,
}

/// What /proc/<pid>/stat says of process `pid`.
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp session tty_nr tpgid flags ...`; comm may hold spaces and
    // parentheses, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    Some(ProcStat {
        comm: stat[open + 1..close].to_string(),
        state: rest.first()?.to_string(),
        ppid: rest.get(1)?.parse().ok()?,
        flags: rest.get(6)?.parse().ok()?,
    })
}

/// Polls until `child` has a child process of its own (true) or has ended (false), for at most 10 s.
fn await_child(child: &mut std::process::Child) -> bool {
    let path = format!("/proc/{0}/task/{0}/children", child.id());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match std::fs::read_to_string(&path) {
            Ok(kids) if !kids.trim().is_empty() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

/// A worker's kill decisions: which calls die and how long after their start.
struct Killer {
    /// Chance that a call is killed, 0 to 1.
    rate: f64,
    rng: XorShift,
    /// Sum and count of the unkilled call durations, per command (ADD, DEL), in µs.
    seen: [(f64, f64); 2],
    /// Mean duration assumed before any call of a command finished.
    guess: Duration,
    /// Share of the kills that wait for the plugin's child (0 to 1; see [`Kill::in_child`]).
    in_child: f64,
}

impl Killer {
    /// A killer for one worker.
    fn new(rate_percent: f64, seed: u64, guess: Duration, in_child: f64) -> Killer {
        Killer {
            rate: rate_percent / 100.0,
            rng: XorShift::new(seed),
            seen: [(0.0, 0.0); 2],
            guess,
            in_child,
        }
    }

    /// A uniform draw in [0, 1).
    fn draw(&mut self) -> f64 {
        self.rng.below(1_000_000) as f64 / 1e6
    }

    /// `Some` when this call of `command` is to be killed.
    fn plan(&mut self, command: Cmd) -> Option<Kill> {
        if self.draw() >= self.rate {
            return None;
        }
        if self.draw() < self.in_child {
            // A delegated plumb-ipam lives a millisecond or two.
            let delay = Duration::from_micros(self.rng.below(2000));
            return Some(Kill {
                delay,
                in_child: true,
            });
        }
        let (sum, n) = self.seen[command as usize];
        let mean = match n {
            0.0 => self.guess.as_secs_f64() * 1e6,
            _ => sum / n,
        };
        let window = mean.max(1.0) as u64;
        Some(Kill {
            delay: Duration::from_micros(self.rng.below(window)),
            in_child: false,
        })
    }

    /// Records the duration of a call that was not killed.
    fn observe(&mut self, command: Cmd, took: Duration) {
        let s = &mut self.seen[command as usize];
        s.0 += took.as_secs_f64() * 1e6;
        s.1 += 1.0;
    }
}

/// The two CNI commands the soak makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add = 0,
    Del = 1,
}

impl Cmd {
    fn as_str(self) -> &'static str {
        match self {
            Cmd::Add => "ADD",
            Cmd::Del => "DEL",
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Counts shared by the workers
// ---------------------------------------------------------------------------------------------------

/// What the workers of one phase saw.
#[derive(Debug, Default)]
struct Tally {
    /// Plugin processes run.
    calls: u64,
    /// Calls that died of the bench's SIGKILL.
    kills: u64,
    /// SIGKILLs sent after the process had already finished (no effect).
    kill_misses: u64,
    /// Of `kills`, those sent while the plugin ran a child process.
    child_kills: u64,
    /// ADDs started (each is one ADD/DEL pair once its DEL succeeds).
    adds: u64,
    /// ADDs that answered a result.
    adds_ok: u64,
    /// DELs that succeeded.
    dels_ok: u64,
    /// Failed calls the bench did not kill, by `ADD code` / `DEL code`.
    codes: BTreeMap<String, u64>,
    /// The first failure message of each key of `codes`.
    examples: BTreeMap<String, String>,
    /// Attachments whose DEL never succeeded.
    gave_up: Vec<String>,
    /// Duplicate addresses, described.
    duplicates: Vec<String>,
}

impl Tally {
    /// Counts one finished call.
    fn count(&mut self, command: Cmd, ended: &Ended, sent: bool) {
        self.calls += 1;
        match ended {
            Ended::Killed => self.kills += 1,
            Ended::Ok(_) if sent => self.kill_misses += 1,
            Ended::Failed(..) if sent => self.kill_misses += 1,
            _ => {}
        }
        match (command, ended) {
            (Cmd::Add, Ended::Ok(_)) => self.adds_ok += 1,
            (Cmd::Del, Ended::Ok(_)) => self.dels_ok += 1,
            (_, Ended::Failed(code, what)) => {
                let key = format!(
                    "{} {}",
                    command.as_str(),
                    code.map_or("(no CNI error)".to_string(), |c| format!("code {c}"))
                );
                *self.codes.entry(key.clone()).or_default() += 1;
                self.examples.entry(key).or_insert_with(|| what.clone());
            }
            _ => {}
        }
    }

    /// Failed calls the bench did not kill.
    fn unexpected(&self) -> u64 {
        self.codes.values().sum()
    }

    /// Prints the counts.
    fn print(&self, phase: &str, took: Duration, pairs: u64) {
        let secs = took.as_secs_f64().max(1e-9);
        println!(
            "{phase}: {pairs} ADD/DEL pairs in {secs:.1} s: {:.0} pairs/s, {:.0} plugin processes/s ({} processes)",
            pairs as f64 / secs,
            self.calls as f64 / secs,
            self.calls
        );
        println!(
            "{phase}: {} ADDs, {} answered a result; {} DELs succeeded; {} calls killed, {} of them while running a child (+{} SIGKILLs that came after the process had finished)",
            self.adds, self.adds_ok, self.dels_ok, self.kills, self.child_kills, self.kill_misses
        );
        match self.codes.is_empty() {
            true => println!("{phase}: error codes seen: none (apart from the kills)"),
            false => {
                for (key, n) in &self.codes {
                    println!(
                        "{phase}: error {key}: {n} time(s), e.g. {}",
                        self.examples[key]
                    );
                }
            }
        }
        for (what, list) in [
            ("DEL given up", &self.gave_up),
            ("duplicate", &self.duplicates),
        ] {
            for line in list.iter().take(5) {
                println!("{phase}: {what}: {line}");
            }
        }
    }
}

/// Addresses answered to live attachments: address → container ID.
type LiveMap = Mutex<HashMap<IpAddr, String>>;

/// Notes an ADD's answer; a duplicate when another live attachment was answered the same address.
fn claim_live(map: &LiveMap, tally: &Mutex<Tally>, ip: IpAddr, cid: &str) {
    let mut m = map.lock().expect("live map");
    if let Some(other) = m.insert(ip, cid.to_string()) {
        tally
            .lock()
            .expect("tally")
            .duplicates
            .push(format!("{ip} answered to {cid} while live for {other}"));
    }
}

/// Forgets a live attachment's address, before its DEL starts.
fn release_live(map: &LiveMap, ip: IpAddr, cid: &str) {
    let mut m = map.lock().expect("live map");
    if m.get(&ip).is_some_and(|c| c == cid) {
        m.remove(&ip);
    }
}

// ---------------------------------------------------------------------------------------------------
// The worker loop, shared by both phases
// ---------------------------------------------------------------------------------------------------

/// A live attachment: container ID, the address its ADD answered, its slot.
#[derive(Debug, Clone)]
struct Live {
    cid: String,
    ip: IpAddr,
    slot: usize,
}

/// One phase: how to run its plugin, how many pairs, and the shared counts.
struct Phase<'a> {
    /// `ipam` or `bridge`, for the output and the container IDs.
    name: &'static str,
    /// The command for (CNI command, container ID, global slot), environment set, stdin not written.
    command: &'a (dyn Fn(Cmd, &str, usize) -> Command + Sync),
    /// The network config on stdin.
    stdin: Vec<u8>,
    /// Slots (live attachments) per worker.
    slots: usize,
    /// Pairs to start in all.
    ops: usize,
    /// Pairs started so far.
    started: AtomicUsize,
    deadline: Instant,
    /// Kill rate in percent.
    kill_rate: f64,
    /// Mean call duration assumed before a worker's first call finished.
    guess: Duration,
    /// Share of the kills aimed at the time the plugin runs a child (see [`Kill::in_child`]).
    in_child: f64,
    seed: u64,
    /// Random per run: starts every container ID.
    nonce: u64,
    tally: Mutex<Tally>,
    live: LiveMap,
    /// Set when a worker hit an error that stops the phase (not a plugin failure).
    broken: Mutex<Option<String>>,
}

impl Phase<'_> {
    /// Runs `workers` threads to the end of the phase; returns the attachments left live.
    fn run(&self, workers: usize) -> Vec<Live> {
        let left = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..workers {
                let left = &left;
                s.spawn(move || {
                    let mut mine = self.worker(w);
                    left.lock().expect("left").append(&mut mine);
                });
            }
        });
        left.into_inner().expect("left")
    }

    /// Whether workers should stop starting pairs.
    fn stopping(&self) -> bool {
        Instant::now() >= self.deadline
            || check_interrupt().is_err()
            || self.broken.lock().expect("broken").is_some()
    }

    /// One worker: round-robin over its slots, DEL of the slot's attachment then ADD of a new one.
    fn worker(&self, w: usize) -> Vec<Live> {
        let mut killer = Killer::new(
            self.kill_rate,
            self.seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            self.guess,
            self.in_child,
        );
        let mut slots: Vec<Option<Live>> = vec![None; self.slots];
        let mut n = 0usize;
        while !self.stopping() {
            let k = self.started.fetch_add(1, Ordering::SeqCst);
            if k >= self.ops {
                break;
            }
            self.progress(k);
            let s = n % self.slots;
            let slot = w * self.slots + s;
            if let Some(old) = slots[s].take() {
                release_live(&self.live, old.ip, &old.cid);
                self.del_until_ok(&mut killer, &old.cid, slot);
            }
            let cid = format!("{}{:012x}w{w}n{n}", self.name, self.nonce);
            n += 1;
            slots[s] = self.add(&mut killer, &cid, slot);
        }
        slots.into_iter().flatten().collect()
    }

    /// Prints a line each time another tenth of the pairs has started.
    fn progress(&self, k: usize) {
        let tenth = (self.ops / 10).max(1);
        if k > 0 && k.is_multiple_of(tenth) {
            let t = self.tally.lock().expect("tally");
            println!(
                "{}: {k} of {} pairs started, {} calls, {} killed, {} errors",
                self.name,
                self.ops,
                t.calls,
                t.kills,
                t.unexpected()
            );
        }
    }

    /// One call, counted; `None` when the call could not even be run (the phase then stops).
    fn call(&self, killer: &mut Killer, command: Cmd, cid: &str, slot: usize) -> Option<Ended> {
        let kill = killer.plan(command);
        match run_call((self.command)(command, cid, slot), &self.stdin, kill) {
            Ok((ended, sent, took)) => {
                if !sent {
                    killer.observe(command, took);
                }
                let mut t = self.tally.lock().expect("tally");
                t.count(command, &ended, sent);
                if matches!(ended, Ended::Killed) && kill.is_some_and(|k| k.in_child) {
                    t.child_kills += 1;
                }
                Some(ended)
            }
            Err(e) => {
                self.broken
                    .lock()
                    .expect("broken")
                    .get_or_insert(format!("{} {cid}: {e}", command.as_str()));
                None
            }
        }
    }

    /// ADD of a new attachment; its live entry when ADD answered, else `None` after DEL until success.
    fn add(&self, killer: &mut Killer, cid: &str, slot: usize) -> Option<Live> {
        self.tally.lock().expect("tally").adds += 1;
        if let Some(Ended::Ok(stdout)) = self.call(killer, Cmd::Add, cid, slot) {
            match first_address(&stdout) {
                Some(ip) => {
                    claim_live(&self.live, &self.tally, ip, cid);
                    return Some(Live {
                        cid: cid.to_string(),
                        ip,
                        slot,
                    });
                }
                None => {
                    let mut t = self.tally.lock().expect("tally");
                    *t.codes
                        .entry("ADD result without address".into())
                        .or_default() += 1;
                    t.examples
                        .entry("ADD result without address".into())
                        .or_insert(stdout);
                }
            }
        }
        self.del_until_ok(killer, cid, slot);
        None
    }

    /// DEL until it succeeds, at most [`DEL_ATTEMPTS`] times, backing off a little after failures.
    fn del_until_ok(&self, killer: &mut Killer, cid: &str, slot: usize) {
        for attempt in 0..DEL_ATTEMPTS {
            match self.call(killer, Cmd::Del, cid, slot) {
                Some(Ended::Ok(_)) => return,
                None => return,
                Some(Ended::Killed) => {}
                Some(Ended::Failed(..)) => {
                    std::thread::sleep(Duration::from_millis(10 * (attempt as u64 + 1)))
                }
            }
        }
        self.tally
            .lock()
            .expect("tally")
            .gave_up
            .push(format!("{cid} (slot {slot}): {DEL_ATTEMPTS} DELs failed"));
    }

    /// The counts so far, leaving empty ones for what follows.
    fn take_tally(&self) -> Tally {
        std::mem::take(&mut *self.tally.lock().expect("tally"))
    }

    /// DEL (no kills) of every attachment in `live`, retried as in the run; the counts of these DELs.
    fn final_dels(&self, live: &[Live]) -> Tally {
        self.take_tally();
        let mut killer = Killer::new(0.0, self.seed, self.guess, 0.0);
        for l in live {
            release_live(&self.live, l.ip, &l.cid);
            self.del_until_ok(&mut killer, &l.cid, l.slot);
        }
        self.take_tally()
    }
}

/// The first address of an ADD result (`ips[0].address` without its prefix).
fn first_address(stdout: &str) -> Option<IpAddr> {
    let v: Value = serde_json::from_str(stdout).ok()?;
    v["ips"][0]["address"]
        .as_str()?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// A plugin command with a runtime's environment for one call (everything else cleared).
fn plugin_command(binary: &Path, call: &Call) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(call.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// A random nonce from the clock and the pid.
fn nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ ((std::process::id() as u64) << 40)) & 0xffff_ffff_ffff
}

// ---------------------------------------------------------------------------------------------------
// The store on disk against what the plugins answered
// ---------------------------------------------------------------------------------------------------

/// Reservations compared with the live attachments.
#[derive(Debug, Default)]
struct StoreCheck {
    /// Live attachments whose reservation is not on disk as answered.
    lost: Vec<String>,
    /// Records, claims and temporary files of no live attachment.
    leaked: Vec<String>,
    /// Claims (`ip-` files) on disk.
    claims: usize,
}

/// Compares every space under `data_dir` with `live` (the store lock held per space).
fn check_store(data_dir: &Path, live: &[Live]) -> Result<StoreCheck, String> {
    let lib = |what: &str, e: plumb_cni::CniError| format!("{what}: {e} (code {})", e.code);
    let mut out = StoreCheck::default();
    let mut found: HashSet<&str> = HashSet::new();
    let spaces = spaces(data_dir).map_err(|e| lib("list spaces", e))?;
    for space in &spaces {
        let store = FileStore::open(data_dir, space).map_err(|e| lib("open store", e))?;
        let locked = store
            .lock(Duration::from_secs(60))
            .map_err(|e| lib("lock store", e))?;
        let listing = locked.list().map_err(|e| lib("list store", e))?;
        out.claims += listing.claims.len();
        let mut inos: HashMap<u64, &str> = HashMap::new();
        for l in live {
            let Ok(Some(stored)) = locked.attachment(&l.cid, IFNAME) else {
                continue;
            };
            found.insert(l.cid.as_str());
            if !stored.record.addrs().contains(&l.ip) || locked.claim_ino(l.ip) != Some(stored.ino)
            {
                out.lost.push(format!(
                    "{} answered {} but its record lists {:?} and the claim of {} is {}",
                    l.cid,
                    l.ip,
                    stored.record.ips,
                    l.ip,
                    match locked.claim_ino(l.ip) {
                        None => "missing",
                        Some(_) => "another inode",
                    }
                ));
            }
            inos.insert(stored.ino, l.cid.as_str());
        }
        let live_files: HashSet<String> = live
            .iter()
            .map(|l| plumb_ipam::store::attachment_file(&l.cid, IFNAME))
            .collect();
        for name in &listing.attachments {
            if !live_files.contains(name) {
                out.leaked.push(format!("record {space}/{name}"));
            }
        }
        for ip in &listing.claims {
            let ours = locked.claim_ino(*ip).is_some_and(|i| inos.contains_key(&i));
            if !ours {
                let holder = match locked.holder(*ip) {
                    Ok(Entry::Record(s)) => format!("held for {}", s.record.container_id),
                    Ok(Entry::Unreadable) => "unreadable".into(),
                    Ok(Entry::Missing) => continue,
                    Err(e) => format!("unreadable: {e}"),
                };
                out.leaked.push(format!("claim {space}/ip-{ip} ({holder})"));
            }
        }
        for name in &listing.temporaries {
            out.leaked.push(format!("temporary file {space}/{name}"));
        }
    }
    for l in live.iter().filter(|l| !found.contains(l.cid.as_str())) {
        out.lost.push(format!(
            "{} answered {} but has no record on disk",
            l.cid, l.ip
        ));
    }
    Ok(out)
}

/// Prints up to five lines of a list under a heading.
fn print_some(phase: &str, what: &str, list: &[String]) {
    for line in list.iter().take(5) {
        println!("{phase}: {what}: {line}");
    }
    if list.len() > 5 {
        println!("{phase}: {what}: … and {} more", list.len() - 5);
    }
}

/// `plumb-ipam list` of `data_dir`: the number of reservation rows, or an error.
fn admin_list_rows(ipam: &Path, data_dir: &Path) -> Result<usize, String> {
    let out = checked(
        "plumb-ipam list",
        Command::new(ipam)
            .args(["list", "--data-dir"])
            .arg(data_dir)
            .output(),
    )?;
    Ok(out.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
}

// ---------------------------------------------------------------------------------------------------
// Phase 1: plumb-ipam alone
// ---------------------------------------------------------------------------------------------------

/// Phase 1: `--ops` pairs through plumb-ipam; its targets.
fn ipam_phase(
    opts: &Options,
    ipam: &Path,
    tmp: &Path,
    seed: u64,
    deadline: Instant,
) -> Result<Vec<Target>, String> {
    let data_dir = tmp.join("ipam");
    let config = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "plumb-ipam",
                        "ipam": {"type": "plumb-ipam", "range": IPAM_SUBNET, "dataDir": data_dir}});
    println!();
    println!(
        "== phase 1: {} ADD/DEL pairs through plumb-ipam (one process per call), {} workers keeping {IPAM_LIVE} attachments live each, on {IPAM_SUBNET}",
        opts.ops, opts.workers
    );
    println!("config: {config}");
    let command = |cmd: Cmd, cid: &str, _slot: usize| {
        plugin_command(
            ipam,
            &Call::new(cmd.as_str(), cid, NO_NETNS, IFNAME, &config),
        )
    };
    let phase = Phase {
        name: "ipam",
        command: &command,
        stdin: serde_json::to_vec(&config).expect("config"),
        slots: IPAM_LIVE,
        ops: opts.ops,
        started: AtomicUsize::new(0),
        deadline,
        kill_rate: opts.kill_rate,
        guess: FIRST_GUESS[0],
        in_child: 0.0,
        seed,
        nonce: nonce(),
        tally: Mutex::new(Tally::default()),
        live: Mutex::new(HashMap::new()),
        broken: Mutex::new(None),
    };
    let start = Instant::now();
    let live = phase.run(opts.workers);
    let took = start.elapsed();
    let tally = phase.take_tally();
    let broken = phase.broken.lock().expect("broken").clone();
    let pairs = tally.adds;
    tally.print("phase 1", took, pairs);
    if let Some(e) = &broken {
        println!("phase 1: stopped early: {e}");
    }
    let before = check_store(&data_dir, &live)?;
    let rows = admin_list_rows(ipam, &data_dir)?;
    println!(
        "phase 1: {} attachments left live; on disk {} claims; `plumb-ipam list` shows {rows} reservations",
        live.len(),
        before.claims
    );
    print_some("phase 1", "lost", &before.lost);
    print_some("phase 1", "leaked before the final DEL", &before.leaked);
    let final_tally = phase.final_dels(&live);
    let after = check_store(&data_dir, &[])?;
    println!(
        "phase 1: after DEL of the {} live attachments: {} claims on disk ({} final DELs failed)",
        live.len(),
        after.claims,
        final_tally.unexpected()
    );
    print_some("phase 1", "leaked after the final DEL", &after.leaked);
    Ok(Outcome {
        phase: "ipam",
        ops: opts.ops,
        took,
        tally: &tally,
        last: &final_tally,
        before: &before,
        after: &after,
        broken,
    }
    .targets(&[]))
}

// ---------------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------------

/// What one phase produced, for its targets.
struct Outcome<'a> {
    /// `ipam` or `bridge`.
    phase: &'static str,
    /// Pairs asked for.
    ops: usize,
    took: Duration,
    /// Counts of the run.
    tally: &'a Tally,
    /// Counts of the final DELs.
    last: &'a Tally,
    /// Store before and after the final DEL.
    before: &'a StoreCheck,
    after: &'a StoreCheck,
    /// Why the phase stopped early, if it did.
    broken: Option<String>,
}

/// How many distinct items two lists hold (what leaked before the final DEL is mostly still there after).
fn distinct(a: &[String], b: &[String]) -> usize {
    a.iter().chain(b).collect::<HashSet<_>>().len()
}

/// A target met when `count` is 0.
fn none(name: String, count: usize) -> Target {
    Target::at_most(&name, 0.0, count as f64, 0)
}

impl Outcome<'_> {
    /// The targets every phase has; `extra` adds `(what, count)` targets that must be 0.
    fn targets(&self, extra: &[(&str, usize)]) -> Vec<Target> {
        let p = self.phase;
        let pairs = self.tally.adds;
        let rate = pairs as f64 / self.took.as_secs_f64().max(1e-9);
        let mut value = format!(
            "{pairs} in {:.1} s, {rate:.0} pairs/s, {} kills",
            self.took.as_secs_f64(),
            self.tally.kills
        );
        if let Some(e) = &self.broken {
            value.push_str(&format!("; stopped: {e}"));
        }
        let mut out = vec![Target {
            name: format!("soak {p} ADD/DEL pairs>={}", self.ops),
            pass: pairs as usize >= self.ops && self.broken.is_none(),
            value,
        }];
        let leaked = distinct(&self.before.leaked, &self.after.leaked);
        for (what, n) in [
            ("duplicate addresses", self.tally.duplicates.len()),
            ("lost reservations", self.before.lost.len()),
            ("leaked records, claims or temp files", leaked),
            (
                "DELs given up",
                self.tally.gave_up.len() + self.last.gave_up.len(),
            ),
            (
                "failed calls not killed",
                (self.tally.unexpected() + self.last.unexpected()) as usize,
            ),
        ] {
            out.push(none(format!("soak {p} {what}"), n));
        }
        for (what, n) in extra {
            out.push(none(format!("soak {p} {what}"), *n));
        }
        out
    }
}
