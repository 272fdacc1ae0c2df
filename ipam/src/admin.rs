//! Admin mode of the file store: `plumb-ipam list|usage|release ...`, run by a person. Prints readable
//! tables of reservations and usage per range and releases reservations by address or attachment. The
//! Kubernetes store's commands (`reconcile`, `nodes`, `crd`, `list`/`usage --kubeconfig`) are in the
//! plumb-ipam-kube crate, which shares this module's options, tables and escaping.

use crate::config::{validate_space, DEFAULT_DATA_DIR, DEFAULT_SPACE};
use crate::range::{from_int, to_int, Family};
use crate::store::{spaces, Entry, FileStore, Locked};
use plumb_cni::{CniError, CniResult};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The admin commands' usage text.
pub const USAGE: &str = "admin commands (without CNI_COMMAND):
  plumb-ipam list    [--data-dir DIR] [--network-name NAME]   reservations, one line per address
  plumb-ipam usage   [--data-dir DIR] [--network-name NAME]   used and free addresses per range
  plumb-ipam release [--data-dir DIR] [--network-name NAME] (--ip IP | --container ID --ifname IF) [--force]
                     frees orphan or unreadable claims; a live attachment's addresses only with --force
  plumb-ipam list    --kubeconfig PATH [--network-name NAME]   Kubernetes store: one line per reservation
  plumb-ipam usage   --kubeconfig PATH [--network-name NAME]   Kubernetes store: used and free per block
  plumb-ipam reconcile [--kubeconfig PATH] [--dry-run] [--grace SECONDS] [--interval SECONDS] [--space NAME]
                     free reservations of deleted pods, retire blocks of deleted nodes (Kubernetes store)
  plumb-ipam nodes   [--kubeconfig PATH] [--address-type TYPE] [--selector LABELS] [--json]
                     the Nodes' addresses (what plumb-vxlan peers.fromNodes floods to)
  plumb-ipam crd     print the IPBlock CustomResourceDefinition (YAML)
Without --network-name, every space (network_name) under the data dir is shown; the default space is _default.
The data dir defaults to /var/lib/cni/plumb-ipam.";

/// The options of `list`, `usage` and `release`.
#[derive(Debug, Default)]
pub struct Opts {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--network-name`.
    pub space: Option<String>,
    /// `--ip`.
    pub ip: Option<IpAddr>,
    /// `--container`.
    pub container: Option<String>,
    /// `--ifname`.
    pub ifname: Option<String>,
    /// `--kubeconfig` (the Kubernetes store: plumb-ipam-kube).
    pub kubeconfig: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// Runs an admin command of the file store; returns the process exit code (plumb-ipam, which hands
/// the commands [`needs_kube`] names to plumb-ipam-kube).
pub fn run_file(args: &[String]) -> i32 {
    print_or_usage(dispatch_file(args))
}

/// Whether an admin command needs the Kubernetes client (plumb-ipam-kube): `reconcile`, `nodes`, `crd`, or anything
/// with `--kubeconfig`.
pub fn needs_kube(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some("reconcile" | "nodes" | "crd")
    ) || args.iter().any(|a| a == "--kubeconfig")
}

/// Prints a command's output and returns exit code 0, or prints its error (with the usage text for a
/// usage mistake) and returns 2 or 1.
pub fn print_or_usage(out: CniResult<String>) -> i32 {
    match out {
        Ok(out) => {
            print!("{out}");
            0
        }
        // A usage mistake (code 7) gets the usage text and exit code 2; a refusal or a failure of the
        // store gets its message and exit code 1.
        Err(e) if e.code == plumb_cni::code::INVALID_CONFIG => {
            eprintln!("plumb-ipam: {e}\n{USAGE}");
            2
        }
        Err(e) => {
            eprintln!("plumb-ipam: {e}");
            1
        }
    }
}

/// Runs an admin command of the file store and returns what it prints.
pub fn dispatch_file(args: &[String]) -> CniResult<String> {
    dispatch_with(args, None)
}

/// What `list` and `usage` print of one store: the file store's spaces under a data dir, or the
/// Kubernetes store's blocks (plumb-ipam-kube).
pub trait Inventory {
    /// `list`: one line per reservation.
    fn list(&self) -> CniResult<String>;
    /// `usage`: used and free addresses per range (file store) or per block (Kubernetes store).
    fn usage(&self) -> CniResult<String>;
}

/// Opens the Kubernetes store's [`Inventory`] for `--kubeconfig` and `--network-name`.
pub type OpenKubeInventory = fn(kubeconfig: &str, space: Option<&str>) -> Box<dyn Inventory>;

/// The file store's spaces under one data dir.
struct FileInventory<'a> {
    data_dir: &'a std::path::Path,
    spaces: &'a [String],
}

impl Inventory for FileInventory<'_> {
    fn list(&self) -> CniResult<String> {
        list(self.data_dir, self.spaces)
    }

    fn usage(&self) -> CniResult<String> {
        usage(self.data_dir, self.spaces)
    }
}

/// Runs `list`, `usage`, `release` or `help` on the store the options select, chosen once: the
/// Kubernetes store (`--kubeconfig`, opened by `kube` when this binary has it) or the file store.
pub fn dispatch_with(args: &[String], kube: Option<OpenKubeInventory>) -> CniResult<String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| CniError::config("no command given"))?;
    let opts = parse_opts(rest)?;
    if let Some(kc) = &opts.kubeconfig {
        let open = kube.ok_or_else(|| {
            CniError::config(
                "--kubeconfig needs the Kubernetes client, which is in plumb-ipam-kube",
            )
        })?;
        if !matches!(cmd.as_str(), "list" | "usage") {
            return Err(CniError::config(format!(
                "--kubeconfig is for list and usage (and reconcile), not {cmd:?}"
            )));
        }
        return inventory_command(cmd, &*open(kc, opts.space.as_deref()));
    }
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    match std::fs::metadata(&data_dir) {
        Ok(m) if m.is_dir() => {}
        _ if matches!(cmd.as_str(), "help" | "--help" | "-h") => {}
        Ok(_) => {
            return Err(CniError::new(
                plumb_cni::code::IO_FAILURE,
                format!(
                    "data dir {} is not a directory",
                    shown(&data_dir.display().to_string())
                ),
            ))
        }
        Err(e) => {
            return Err(CniError::io(
                format!(
                    "data dir {} cannot be read (give --data-dir the ipam.dataDir of the network)",
                    shown(&data_dir.display().to_string())
                ),
                &e,
            ))
        }
    }
    let spaces = match &opts.space {
        // The default space is named with a leading '_' so no network_name can collide with it.
        Some(s) if s == DEFAULT_SPACE => vec![s.clone()],
        Some(s) => vec![validate_space(s)?],
        None => spaces(&data_dir)?,
    };
    match cmd.as_str() {
        "release" => release(&data_dir, &spaces, &opts),
        "help" | "--help" | "-h" => Ok(format!("{USAGE}\n")),
        cmd => inventory_command(
            cmd,
            &FileInventory {
                data_dir: &data_dir,
                spaces: &spaces,
            },
        ),
    }
}

fn inventory_command(cmd: &str, store: &dyn Inventory) -> CniResult<String> {
    match cmd {
        "list" => store.list(),
        "usage" => store.usage(),
        other => Err(CniError::config(format!("unknown command {other:?}"))),
    }
}

/// Parses the options after the command; an unknown option or a missing value is code 7.
pub fn parse_opts(rest: &[String]) -> CniResult<Opts> {
    let mut o = Opts::default();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| CniError::config(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--data-dir" => o.data_dir = Some(PathBuf::from(value()?)),
            "--network-name" => o.space = Some(value()?),
            "--ip" => o.ip = Some(crate::range::parse_ip(&value()?, "--ip")?),
            "--container" => o.container = Some(value()?),
            "--ifname" => o.ifname = Some(value()?),
            "--kubeconfig" => o.kubeconfig = Some(value()?),
            "--force" => o.force = true,
            other => return Err(CniError::config(format!("unknown option {other:?}"))),
        }
    }
    Ok(o)
}

fn with_space<T>(
    data_dir: &std::path::Path,
    space: &str,
    f: impl FnOnce(&Locked) -> CniResult<T>,
) -> CniResult<T> {
    // The admin commands never create a store: a missing space is an error naming it.
    let store = FileStore::open_existing(data_dir, space)?.ok_or_else(|| {
        CniError::new(
            plumb_cni::code::IO_FAILURE,
            format!(
                "there is no space {} under {} (the spaces there: {})",
                shown(space),
                shown(&data_dir.display().to_string()),
                spaces(data_dir)
                    .map(|s| s.iter().map(|n| shown(n)).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ),
        )
    })?;
    let locked = store.lock(Duration::from_secs(10))?;
    f(&locked)
}

fn list(data_dir: &std::path::Path, spaces: &[String]) -> CniResult<String> {
    let mut rows = vec![[
        "SPACE",
        "ADDRESS",
        "NETWORK",
        "CONTAINER",
        "IFNAME",
        "POD",
        "AGE",
    ]
    .map(String::from)
    .to_vec()];
    let now = crate::store::now_secs();
    for space in spaces {
        with_space(data_dir, space, |l| {
            let mut claims = l.list()?.claims;
            claims.sort_by_key(|ip| (ip.is_ipv6(), to_int(*ip)));
            for ip in claims {
                let r = match l.holder(ip)? {
                    Entry::Record(s) => s.record,
                    Entry::Missing => continue,
                    Entry::Unreadable => {
                        let mut row = vec![
                            shown(space),
                            ip.to_string(),
                            "(unreadable; GC removes it)".into(),
                        ];
                        row.resize(7, "-".into());
                        rows.push(row);
                        continue;
                    }
                };
                let pod = match (r.pod_namespace, r.pod_name) {
                    (Some(ns), Some(n)) => format!("{}/{}", shown(&ns), shown(&n)),
                    _ => "-".into(),
                };
                let cid: String = r.container_id.chars().take(12).collect();
                rows.push(vec![
                    shown(space),
                    ip.to_string(),
                    shown(&r.network),
                    shown(&cid),
                    shown(&r.ifname),
                    pod,
                    age(now.saturating_sub(r.created)),
                ]);
            }
            Ok(())
        })?;
    }
    Ok(table(&rows))
}

fn usage(data_dir: &std::path::Path, spaces: &[String]) -> CniResult<String> {
    let mut rows = vec![["SPACE", "RANGE", "SIZE", "USED", "FREE"]
        .map(String::from)
        .to_vec()];
    for space in spaces {
        with_space(data_dir, space, |l| {
            let claims: Vec<u128> = l.list()?.claims.iter().map(|ip| to_int(*ip)).collect();
            let mut ranges = Vec::new();
            for entry in std::fs::read_dir(l.dir())
                .map_err(|e| CniError::io("cannot list store", &e))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(span) = name
                    .strip_prefix("hint-")
                    .filter(|n| !n.ends_with(".cursor"))
                else {
                    continue;
                };
                let Some((a, b)) = split_span(span) else {
                    continue;
                };
                ranges.push((a, b));
            }
            ranges.sort_by_key(|(a, _)| (a.is_ipv6(), to_int(*a)));
            for (a, b) in ranges {
                let (lo, hi) = (to_int(a), to_int(b));
                let used = claims.iter().filter(|c| (lo..=hi).contains(*c)).count() as u128;
                // A hand-made hint name could span everything or run backwards: never overflow.
                let size = hi.saturating_sub(lo).saturating_add(1);
                rows.push(vec![
                    shown(space),
                    format!("{a}-{b}"),
                    size.to_string(),
                    used.to_string(),
                    size.saturating_sub(used).to_string(),
                ]);
            }
            Ok(())
        })?;
    }
    Ok(format!(
        "{}(SIZE counts the whole span; excluded addresses and the gateway are part of it)\n",
        table(&rows)
    ))
}

/// Whom a live reservation belongs to, for messages: `container C interface I[, pod ns/n]`.
fn owner(r: &crate::store::Record) -> String {
    let pod = match (&r.pod_namespace, &r.pod_name) {
        (Some(ns), Some(n)) => format!(", pod {}/{}", shown(ns), shown(n)),
        _ => String::new(),
    };
    format!(
        "container {}, interface {}{pod}",
        shown(&r.container_id),
        shown(&r.ifname)
    )
}

/// The refusal to free a live reservation without `--force`.
fn refuse_live(what: &str, r: &crate::store::Record) -> CniError {
    CniError::new(
        plumb_cni::code::ADDRESS_TAKEN,
        format!(
            "{what} is held by the live attachment {} (its record names it and the claim is the record's hard link); \
             the pod may still use it. Delete the pod, or add --force to release it anyway",
            owner(r)
        ),
    )
}

fn release(data_dir: &std::path::Path, spaces: &[String], o: &Opts) -> CniResult<String> {
    if !matches!(
        (&o.ip, &o.container, &o.ifname),
        (Some(_), None, None) | (None, Some(_), Some(_))
    ) {
        return Err(CniError::config(
            "give either --ip IP or both --container ID and --ifname IF",
        ));
    }
    let mut out = String::new();
    for space in spaces {
        with_space(data_dir, space, |l| {
            let line =
                |ip: IpAddr, who: &str| format!("released {ip} (space {}, {who})\n", shown(space));
            if let Some(ip) = o.ip {
                match l.holder(ip)? {
                    Entry::Missing => {}
                    Entry::Record(claim) => {
                        if let Some(live) = l.live_holder(ip, &claim)? {
                            if !o.force {
                                return Err(refuse_live(&format!("{ip}"), &live.record));
                            }
                            let who = owner(&live.record);
                            for freed in
                                l.release(&live.record.container_id, &live.record.ifname)?
                            {
                                out.push_str(&line(freed, &who));
                            }
                        } else {
                            // An orphan claim: no record of its attachment points at it. Only the claim
                            // goes; the attachment's own (other) reservation stays.
                            l.unlink_claim(ip)?;
                            out.push_str(&line(
                                ip,
                                &format!("orphan claim of {}", owner(&claim.record)),
                            ));
                        }
                    }
                    Entry::Unreadable => {
                        l.unlink_claim(ip)?;
                        out.push_str(&line(ip, "unreadable claim"));
                    }
                }
                return Ok(());
            }
            let (cid, ifname) = (
                o.container.as_deref().unwrap_or_default(),
                o.ifname.as_deref().unwrap_or_default(),
            );
            if let Some(s) = l.attachment(cid, ifname).ok().flatten() {
                let live = s
                    .record
                    .addrs()
                    .iter()
                    .any(|ip| l.claim_ino(*ip) == Some(s.ino));
                if live && !o.force {
                    return Err(refuse_live("this attachment's reservation", &s.record));
                }
            }
            let who = format!("container {}, interface {}", shown(cid), shown(ifname));
            for freed in l.release(cid, ifname)? {
                out.push_str(&line(freed, &who));
            }
            Ok(())
        })?;
    }
    if out.is_empty() {
        out.push_str("nothing matched; nothing released\n");
    }
    Ok(out)
}

fn split_span(span: &str) -> Option<(IpAddr, IpAddr)> {
    // IPv6 addresses hold no '-', IPv4 neither: the one '-' splits the span.
    let (a, b) = span.split_once('-')?;
    let (a, b): (IpAddr, IpAddr) = (a.parse().ok()?, b.parse().ok()?);
    let fam = Family::of(a);
    (Family::of(b) == fam).then_some((from_int(fam, to_int(a)), b))
}

/// A value from a record or an object as admin output shows it: printable ASCII as is, everything else
/// (newlines, tabs, other control characters, spaces, non-ASCII such as bidi overrides) and `\` escaped
/// as `\u{..}` / `\\`, so a stored value can never forge a row or a column. Records and objects come
/// from the store, which an older version or a person may have written.
pub fn shown(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out
}

/// An age in seconds as `list` shows it: `59s`, `5m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Rows as a table of left-aligned columns two spaces apart (the first row is the header).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_everything_that_could_forge_output() {
        assert_eq!(shown("ns/pod-1_a.b"), "ns/pod-1_a.b");
        assert_eq!(
            shown("a\nb c\t\\\u{202e}é"),
            "a\\u{a}b\\u{20}c\\u{9}\\\\\\u{202e}\\u{e9}"
        );
    }
}
