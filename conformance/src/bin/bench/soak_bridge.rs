//! Phase 2 of mode `soak`: plumb-bridge (which runs plumb-ipam) with `macspoofchk: true` in a node
//! namespace and container namespaces the bench creates, then the node's links, its spoof-check chains
//! and the container namespaces' interfaces compared with the live attachments, and the orphaned
//! plumb-ipam children of killed plumb-bridge processes counted (the bench is their subreaper).

use super::{
    check_store, distinct, nonce, none, plugin_command, print_some, proc_stat, Cmd, Live, Outcome,
    Phase, Tally, BRIDGE_SLOTS, FIRST_GUESS, IFNAME, NETWORK, RUNNING_AT_KILL,
};
use crate::bridge::{checked, ip_batch, netns_exists};
use crate::{release_bin_dir, Options, Target};
use conformance::plugin::Call;
use conformance::unique_name;
use plumb_attach::firewall::SPOOFCHK_TABLE;
use plumb_attach::naming;
use plumb_nft::{Family, Nft};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pool of phase 2.
const BRIDGE_SUBNET: &str = "10.34.0.0/22";
/// Gateway of [`BRIDGE_SUBNET`] (the bridge's address).
const BRIDGE_GATEWAY: &str = "10.34.0.1";
/// Share of the kills aimed at the time plumb-bridge runs plumb-ipam: most of a plumb-bridge call under
/// 16-way contention is waiting for the bridge lock, so kills at a uniform time would rarely land there.
const IN_CHILD_KILLS: f64 = 0.5;

/// Phase 2: `--bridge-ops` pairs through plumb-bridge; its targets. Teardown runs whatever happened.
pub(super) fn bridge_phase(
    opts: &Options,
    bridge: &Path,
    tmp: &Path,
    seed: u64,
    deadline: Instant,
) -> Result<Vec<Target>, String> {
    println!();
    println!(
        "== phase 2: {} ADD/DEL pairs through plumb-bridge + plumb-ipam with macspoofchk, {} workers with {BRIDGE_SLOTS} container netns each, on {BRIDGE_SUBNET}",
        opts.bridge_ops, opts.workers
    );
    let mut lab = Lab {
        node: unique_name("psn"),
        node_fd: None,
        containers: Vec::new(),
        bridge: unique_name("psb"),
        data_dir: tmp.join("bridge-ipam"),
        torn_down: false,
    };
    let orphans = Orphans::start();
    let result = lab
        .create(opts.workers * BRIDGE_SLOTS)
        .and_then(|()| bridge_soak(&lab, opts, bridge, seed, deadline, &orphans));
    let orphans = orphans.finish();
    let cleaned = lab.teardown();
    println!(
        "phase 2: orphaned plumb-ipam processes reparented to the bench: {}; {} were running when their plumb-bridge was killed and then exited by themselves (ran on without their caller); {} seen running by the 5 ms scan; {} exited by themselves in all, {} died of a signal",
        orphans.seen.len(),
        orphans.ran_on,
        orphans.running.len(),
        orphans.exited,
        orphans.signaled
    );
    let (mut targets, extra) = result?;
    cleaned?;
    let extra: Vec<(&str, usize)> = extra
        .iter()
        .map(|(w, n)| (w.as_str(), *n))
        .chain([(
            "plumb-ipam children running on after plumb-bridge was killed",
            orphans.ran_on as usize,
        )])
        .collect();
    targets.extend(bridge_extra_targets(&extra));
    Ok(targets)
}

/// The phase-2-only targets.
fn bridge_extra_targets(extra: &[(&str, usize)]) -> Vec<Target> {
    extra
        .iter()
        .map(|(what, n)| none(format!("soak bridge {what}"), *n))
        .collect()
}

/// Named counts that must be 0.
type Extra = Vec<(String, usize)>;

/// The run, the checks and the final DELs of phase 2 (the lab exists).
fn bridge_soak(
    lab: &Lab,
    opts: &Options,
    bridge: &Path,
    seed: u64,
    deadline: Instant,
    orphans: &Orphans,
) -> Result<(Vec<Target>, Extra), String> {
    let config = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "plumb-bridge",
                        "bridge": lab.bridge, "isGateway": true, "macspoofchk": true,
                        "ipam": {"type": "plumb-ipam", "range": BRIDGE_SUBNET,
                                 "gateway": BRIDGE_GATEWAY, "dataDir": lab.data_dir}});
    println!("node netns {}: {config}", lab.node);
    let cni_path = release_bin_dir().display().to_string();
    let node_fd = lab.node_fd.as_ref().expect("created").as_raw_fd();
    let command = |cmd: Cmd, cid: &str, slot: usize| {
        let netns = format!("/run/netns/{}", lab.containers[slot]);
        let call = Call::new(cmd.as_str(), cid, &netns, IFNAME, &config).env("CNI_PATH", &cni_path);
        in_netns(plugin_command(bridge, &call), node_fd)
    };
    let phase = Phase {
        name: "bridge",
        command: &command,
        stdin: serde_json::to_vec(&config).expect("config"),
        slots: BRIDGE_SLOTS,
        ops: opts.bridge_ops,
        started: AtomicUsize::new(0),
        deadline,
        kill_rate: opts.kill_rate,
        guess: FIRST_GUESS[1],
        in_child: IN_CHILD_KILLS,
        seed: seed.rotate_left(17),
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
    tally.print("phase 2", took, tally.adds);
    if let Some(e) = &broken {
        println!("phase 2: stopped early: {e}");
    }
    // Orphans of killed plumb-bridge processes may still be finishing their ADD or DEL.
    orphans.wait_idle(Duration::from_secs(45));
    let before = check_store(&lab.data_dir, &live)?;
    let node_before = lab.check(&live)?;
    println!(
        "phase 2: {} attachments left live; on disk {} claims",
        live.len(),
        before.claims
    );
    print_some("phase 2", "lost", &before.lost);
    print_some("phase 2", "leaked before the final DEL", &before.leaked);
    node_before.print("before the final DEL");
    let last = phase.final_dels(&live);
    orphans.wait_idle(Duration::from_secs(45));
    let after = check_store(&lab.data_dir, &[])?;
    let node_after = lab.check(&[])?;
    println!(
        "phase 2: after DEL of the {} live attachments: {} claims on disk ({} final DELs failed)",
        live.len(),
        after.claims,
        last.unexpected()
    );
    print_some("phase 2", "leaked after the final DEL", &after.leaked);
    node_after.print("after the final DEL");
    let targets = Outcome {
        phase: "bridge",
        ops: opts.bridge_ops,
        took,
        tally: &tally,
        last: &last,
        before: &before,
        after: &after,
        broken,
    }
    .targets(&[]);
    let both = |f: fn(&NodeCheck) -> &Vec<String>| distinct(f(&node_before), f(&node_after));
    let extra = vec![
        ("leaked host links".to_string(), both(|n| &n.leaked_links)),
        (
            "leaked spoof-check chains".to_string(),
            both(|n| &n.leaked_chains),
        ),
        (
            "leaked container interfaces".to_string(),
            both(|n| &n.leaked_pod_links),
        ),
        (
            "live attachments missing their veth, chain or interface".to_string(),
            node_before.lost.len(),
        ),
    ];
    Ok((targets, extra))
}

/// `cmd` entering the network namespace open as `fd` before exec.
fn in_netns(mut cmd: Command, fd: i32) -> Command {
    // SAFETY: between fork and exec the closure only makes the setns system call and reads errno,
    // both async-signal-safe; `fd` stays open in the parent while the lab lives.
    unsafe {
        cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    cmd
}

/// The namespaces of phase 2: one node (bridge, host veths, nftables) and the container namespaces.
struct Lab {
    /// The node namespace's name.
    node: String,
    /// The node namespace, open once created.
    node_fd: Option<File>,
    /// Container namespace names, one per slot, as far as created.
    containers: Vec<String>,
    /// The bridge name in the config.
    bridge: String,
    /// plumb-ipam's data dir.
    data_dir: PathBuf,
    /// Whether [`Lab::teardown`] ran (else dropping the lab runs it, e.g. after a panic).
    torn_down: bool,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = self.teardown() {
                println!("phase 2 cleanup problem: {e}");
            }
        }
    }
}

/// Links and chains of the node and the container namespaces compared with the live attachments.
#[derive(Debug, Default)]
struct NodeCheck {
    /// Host-side links (veths `plb*` and anything else but `lo` and the bridge) of no live attachment.
    leaked_links: Vec<String>,
    /// Spoof-check chains of no live attachment.
    leaked_chains: Vec<String>,
    /// Interfaces in container namespaces besides `lo` and the live attachment's.
    leaked_pod_links: Vec<String>,
    /// Live attachments missing their host veth, chain or container interface.
    lost: Vec<String>,
}

impl NodeCheck {
    fn print(&self, when: &str) {
        println!(
            "phase 2: {when}: leaked host links {}, leaked chains {}, leaked container interfaces {}, live attachments missing a part {}",
            self.leaked_links.len(),
            self.leaked_chains.len(),
            self.leaked_pod_links.len(),
            self.lost.len()
        );
        print_some("phase 2", "leaked host link", &self.leaked_links);
        print_some("phase 2", "leaked chain", &self.leaked_chains);
        print_some(
            "phase 2",
            "leaked container interface",
            &self.leaked_pod_links,
        );
        print_some("phase 2", "missing", &self.lost);
    }
}

impl Lab {
    /// Creates the node namespace and `slots` container namespaces (one `ip -batch`).
    fn create(&mut self, slots: usize) -> Result<(), String> {
        if netns_exists(&self.node) {
            return Err(format!(
                "netns {} exists already (not the bench's)",
                self.node
            ));
        }
        let prefix = format!("psc{:06x}-", nonce() & 0xff_ffff);
        let names: Vec<String> = (0..slots).map(|i| format!("{prefix}{i}")).collect();
        if let Some(taken) = names.iter().find(|n| netns_exists(n)) {
            return Err(format!("netns {taken} exists already (not the bench's)"));
        }
        self.containers = names;
        let mut script = format!("netns add {}\n", self.node);
        for n in &self.containers {
            script.push_str(&format!("netns add {n}\n"));
        }
        ip_batch(&script, false)?;
        let path = format!("/run/netns/{}", self.node);
        self.node_fd = Some(File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?);
        println!(
            "created node netns {} and {slots} container netns ({}0..{})",
            self.node,
            prefix,
            slots - 1
        );
        Ok(())
    }

    /// Link names in namespace `netns`.
    fn links(netns: &str) -> Result<Vec<String>, String> {
        let out = checked(
            &format!("ip -n {netns} link show"),
            Command::new("ip")
                .args(["-n", netns, "-o", "link", "show"])
                .output(),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect())
    }

    /// Compares the node's links and chains and each container namespace's links with `live`.
    fn check(&self, live: &[Live]) -> Result<NodeCheck, String> {
        let mut out = NodeCheck::default();
        let veths: HashMap<String, &str> = live
            .iter()
            .map(|l| (naming::host_veth(&l.cid, IFNAME), l.cid.as_str()))
            .collect();
        let links: BTreeSet<String> = Lab::links(&self.node)?.into_iter().collect();
        for name in &links {
            if name != "lo" && *name != self.bridge && !veths.contains_key(name) {
                out.leaked_links
                    .push(format!("{name} in node netns {}", self.node));
            }
        }
        for (veth, cid) in &veths {
            if !links.contains(veth) {
                out.lost.push(format!("host veth {veth} of live {cid}"));
            }
        }
        let nft = plumb_net::netns::Netns::open(&format!("/run/netns/{}", self.node))
            .map_err(std::io::Error::from)
            .and_then(plumb_net::session::Session::enter)
            .and_then(|s| s.run(plumb_nft::open_socket))
            .and_then(Nft::from_fd)
            .map_err(|e| format!("nftables socket in {}: {e}", self.node))?;
        let chains: BTreeSet<String> = nft
            .list_chains(Family::Netdev, SPOOFCHK_TABLE)
            .map_err(|e| format!("list chains of netdev {SPOOFCHK_TABLE}: {e}"))?
            .into_iter()
            .collect();
        let wanted: HashMap<String, &str> = live
            .iter()
            .map(|l| (naming::chain(NETWORK, &l.cid, IFNAME), l.cid.as_str()))
            .collect();
        for c in &chains {
            if !wanted.contains_key(c) {
                out.leaked_chains
                    .push(format!("netdev {SPOOFCHK_TABLE} {c}"));
            }
        }
        for (c, cid) in &wanted {
            if !chains.contains(c) {
                out.lost.push(format!("chain {c} of live {cid}"));
            }
        }
        let by_slot: HashMap<usize, &str> = live.iter().map(|l| (l.slot, l.cid.as_str())).collect();
        for (slot, ns) in self.containers.iter().enumerate() {
            let names: Vec<String> = Lab::links(ns)?.into_iter().filter(|n| n != "lo").collect();
            let expected = by_slot.get(&slot);
            for n in &names {
                if expected.is_none() || n != IFNAME {
                    out.leaked_pod_links
                        .push(format!("{n} in container netns {ns}"));
                }
            }
            if let Some(cid) = expected {
                if !names.iter().any(|n| n == IFNAME) {
                    out.lost.push(format!("{IFNAME} of live {cid} in {ns}"));
                }
            }
        }
        Ok(out)
    }

    /// Deletes every namespace the lab made (the bridge and veths go with the node) and the bridge's
    /// plumb lock file; an error naming what is left.
    fn teardown(&mut self) -> Result<(), String> {
        self.torn_down = true;
        self.node_fd = None;
        let all: Vec<&String> = std::iter::once(&self.node)
            .chain(&self.containers)
            .filter(|n| netns_exists(n))
            .collect();
        let script: String = all.iter().map(|n| format!("netns del {n}\n")).collect();
        let batch = match script.is_empty() {
            true => Ok(()),
            false => ip_batch(&script, true),
        };
        let mut problems = Vec::new();
        let left: Vec<&&String> = all.iter().filter(|n| netns_exists(n)).collect();
        if !left.is_empty() {
            problems.push(format!(
                "{} netns not deleted (e.g. {}): {}",
                left.len(),
                left[0],
                batch.err().unwrap_or_default()
            ));
        }
        let lock =
            Path::new(plumb_cni::lock::RESOURCE_LOCK_DIR).join(format!("bridge-{}", self.bridge));
        if let Err(e) = std::fs::remove_file(&lock) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("cannot remove {}: {e}", lock.display()));
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        println!(
            "phase 2 cleanup: deleted {} netns (node and containers, with the bridge and veths), the bridge lock file and the data dir",
            all.len()
        );
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Orphaned plumb-ipam children
// ---------------------------------------------------------------------------------------------------

/// Orphaned `plumb-ipam` processes reparented to the bench (a child subreaper while phase 2 runs).
#[derive(Debug, Default)]
struct OrphanCounts {
    /// Every orphan pid seen.
    seen: HashSet<i32>,
    /// Orphans seen in a state other than zombie: they ran on after their plumb-bridge died.
    running: HashSet<i32>,
    /// Orphans reaped with an exit code (they finished their work).
    exited: u64,
    /// Orphans reaped after dying of a signal.
    signaled: u64,
    /// Orphans that were running when the bench killed their plumb-bridge and later exited by
    /// themselves: they ran to the end of their work without their caller.
    ran_on: u64,
    /// Orphans not yet reaped.
    unreaped: HashSet<i32>,
}

/// A thread that watches for orphans every few milliseconds and reaps them.
struct Orphans {
    counts: Arc<Mutex<OrphanCounts>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Orphans {
    /// Makes the bench a child subreaper and starts the watcher.
    fn start() -> Orphans {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers and changes only this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let counts = Arc::new(Mutex::new(OrphanCounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                scan_orphans(&c);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Orphans {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (at most `limit`) until no orphan is left unreaped.
    fn wait_idle(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            scan_orphans(&self.counts);
            if self.counts.lock().expect("orphans").unreaped.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the watcher, ends the subreaper role and returns the counts.
    fn finish(mut self) -> OrphanCounts {
        self.wait_idle(Duration::from_secs(45));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: as in `start`.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
        std::mem::take(&mut *self.counts.lock().expect("orphans"))
    }
}

/// One pass over /proc: notes every `plumb-ipam` whose parent is the bench, reaps those that ended.
fn scan_orphans(counts: &Mutex<OrphanCounts>) {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let found: Vec<(i32, bool)> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, st)| st.ppid == me && st.comm == "plumb-ipam")
        .map(|(pid, st)| (pid, st.state != "Z"))
        .collect();
    let mut c = counts.lock().expect("orphans");
    for (pid, alive) in found {
        c.seen.insert(pid);
        c.unreaped.insert(pid);
        if alive {
            c.running.insert(pid);
        }
    }
    let pending: Vec<i32> = c.unreaped.iter().copied().collect();
    for pid in pending {
        let mut status = 0;
        // SAFETY: waitpid on a pid that is our child (a reparented orphan), WNOHANG: never blocks;
        // `status` is a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            c.unreaped.remove(&pid);
            if libc::WIFEXITED(status) {
                c.exited += 1;
                if RUNNING_AT_KILL.lock().expect("running").contains(&pid) {
                    c.ran_on += 1;
                }
            } else {
                c.signaled += 1;
            }
        } else if r < 0 {
            c.unreaped.remove(&pid);
        }
    }
}
