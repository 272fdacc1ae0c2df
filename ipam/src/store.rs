//! The file store: one directory per space under `dataDir`, readable with `ls` and `cat`.
//!
//! ```text
//! <dataDir>/<space>/.lock                     flock held for every change
//! <dataDir>/<space>/att-<containerID>@<ifname> the attachment record (JSON)
//! <dataDir>/<space>/ip-<address>               a hard link to the record of the attachment holding it
//! <dataDir>/<space>/hint-<first>-<last>        free-address hint of one range (see `hint`)
//! ```
//!
//! A record is written once to a temporary file; each address is then claimed with `link()`, which never
//! overwrites, and the record is renamed into place. The temporary file's name is fixed per attachment
//! (`.tmp-att-<containerID>@<ifname>`), so DEL also finds what an ADD killed between the claims and the
//! rename left (the temporary record and the claims linked to it) without scanning the directory. Nothing is fsynced unless the config asks (`fsync`):
//! a reservation the disk had not yet written when power was lost belonged to a pod that died with the
//! node; a name left with empty content reads as `Entry::Unreadable`, which allocation steps over and
//! GC removes (docs/design.md has the reasoning and the measured cost).
//! An `ip-` file and its `att-` file are the same inode, so ownership is checked with one `stat`, DEL
//! never scans, and a crash at any point leaves either a complete reservation or an orphan `ip-` link
//! whose owner is named inside it: the next ADD of that attachment reuses it and GC removes it.

use plumb_cni::lock::{lock_exclusive, LockGuard};
use plumb_cni::{code, CniError, CniResult};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One attachment's reservation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The CNI network `name` that made the reservation (GC only touches its own network's).
    pub network: String,
    /// Addresses with their subnet prefix, one per range, e.g. `10.1.0.5/24`.
    pub ips: Vec<String>,
    /// `K8S_POD_NAMESPACE`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// `K8S_POD_UID`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Unix time of the reservation.
    pub created: u64,
}

impl Record {
    /// The bare addresses of the record.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.ips
            .iter()
            .filter_map(|c| c.split('/').next()?.parse().ok())
            .collect()
    }

    /// Whether the record belongs to an attachment.
    pub fn is_for(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// What one name of the store holds.
#[derive(Debug, Clone)]
pub enum Entry {
    /// No such file.
    Missing,
    /// A file whose content is not a record.
    Unreadable,
    /// A record.
    Record(Stored),
}

/// A stored record with the inode that identifies it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The record.
    pub record: Record,
    /// Inode of the file: an `ip-` file belongs to an attachment only if it is the same inode.
    pub ino: u64,
}

/// The store of one space.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    fsync: bool,
}

impl FileStore {
    /// Opens (creating if needed) the directory of `space` under `data_dir`.
    pub fn open(data_dir: &Path, space: &str) -> CniResult<FileStore> {
        let dir = data_dir.join(space);
        fs::create_dir_all(&dir).map_err(|e| {
            CniError::io(
                format!("cannot create store directory {}", dir.display()),
                &e,
            )
        })?;
        Ok(FileStore { dir, fsync: false })
    }

    /// Opens the directory of `space` under `data_dir` only if it exists (DEL and the admin commands
    /// never create a store): `None` when it does not.
    pub fn open_existing(data_dir: &Path, space: &str) -> CniResult<Option<FileStore>> {
        let dir = data_dir.join(space);
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(Some(FileStore { dir, fsync: false })),
            Ok(_) => Err(CniError::new(
                code::IO_FAILURE,
                format!("{} is not a directory; move it away", dir.display()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("cannot open {}", dir.display()), &e)),
        }
    }

    /// Also fsync each record before naming it and the directory after each change (config `fsync`).
    pub fn with_fsync(mut self, fsync: bool) -> FileStore {
        self.fsync = fsync;
        self
    }

    /// The space directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the space lock; every read that decides and every change happens under it.
    pub fn lock(&self, timeout: Duration) -> CniResult<Locked<'_>> {
        let guard = lock_exclusive(&self.dir.join(".lock"), timeout).map_err(|e| {
            e.caused_by("raise ipam.lockTimeoutSeconds if the store is on a slow shared filesystem")
        })?;
        Ok(Locked {
            store: self,
            _guard: guard,
        })
    }
}

/// The store with its lock held.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a FileStore,
    _guard: LockGuard,
}

/// File name of an attachment record: `att-<containerID>@<ifname>`, each part percent-encoded outside
/// `[A-Za-z0-9._-]`. The runtime-facing layer already limits container IDs and interface names to the
/// CNI charset; encoding here as well means no value (from an old record, a hand-written file or the
/// admin command line) can name a path outside the space directory or hide the `@`.
pub fn attachment_file(container_id: &str, ifname: &str) -> String {
    let mut s = String::from("att-");
    encode_into(&mut s, container_id);
    s.push('@');
    encode_into(&mut s, ifname);
    s
}

fn encode_into(out: &mut String, part: &str) {
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// File name of the temporary record of an attachment's commit (see the module doc).
pub fn temp_file(container_id: &str, ifname: &str) -> String {
    format!(".tmp-{}", attachment_file(container_id, ifname))
}

/// The side name [`Locked::commit`] links a temporary record to before renaming it over a claim.
fn side_file(temp: &Path) -> PathBuf {
    let mut side = temp.as_os_str().to_owned();
    side.push(".link");
    PathBuf::from(side)
}

/// File name of an address claim.
pub fn ip_file(ip: IpAddr) -> String {
    format!("ip-{ip}")
}

impl Locked<'_> {
    /// The space directory.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.store.dir.join(name)
    }

    /// Reads a name of the store without judging it: missing, unreadable (empty or torn content, which only a
    /// power loss without fsync can leave) or a record.
    pub fn entry(&self, name: &str) -> CniResult<Entry> {
        let p = self.path(name);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Missing),
            Err(e) => return Err(CniError::io(format!("cannot read {}", p.display()), &e)),
        };
        let ino = match fs::metadata(&p) {
            Ok(m) => m.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Missing),
            Err(e) => return Err(CniError::io(format!("cannot stat {}", p.display()), &e)),
        };
        Ok(match serde_json::from_slice(&bytes) {
            Ok(record) => Entry::Record(Stored { record, ino }),
            Err(_) => Entry::Unreadable,
        })
    }

    /// Reads a record file; `None` if it does not exist, code 104 if it is not a record.
    pub fn read(&self, name: &str) -> CniResult<Option<Stored>> {
        match self.entry(name)? {
            Entry::Missing => Ok(None),
            Entry::Record(s) => Ok(Some(s)),
            Entry::Unreadable => Err(CniError::new(
                code::STORE_CORRUPT,
                format!(
                    "{} is not a plumb-ipam record; GC removes such files, or move it away",
                    self.path(name).display()
                ),
            )),
        }
    }

    /// The record of an attachment, if any.
    pub fn attachment(&self, container_id: &str, ifname: &str) -> CniResult<Option<Stored>> {
        self.read(&attachment_file(container_id, ifname))
    }

    /// Who holds an address: missing, unreadable or a record.
    pub fn holder(&self, ip: IpAddr) -> CniResult<Entry> {
        self.entry(&ip_file(ip))
    }

    /// The live record holding `ip`, given its claim: the attachment record the claim names exists, is
    /// the same inode (the claim is its hard link) and lists `ip`. A claim that fails any of these is an
    /// orphan (left by a killed ADD or a record since replaced). Whether the container itself still
    /// runs cannot be known from the store; see docs/ipam.md.
    pub fn live_holder(&self, ip: IpAddr, claim: &Stored) -> CniResult<Option<Stored>> {
        let r = &claim.record;
        Ok(
            match self.entry(&attachment_file(&r.container_id, &r.ifname))? {
                Entry::Record(s) if s.ino == claim.ino && s.record.addrs().contains(&ip) => Some(s),
                _ => None,
            },
        )
    }

    /// Whether an `ip-` file exists (one `lstat`, no read).
    pub fn is_claimed(&self, ip: IpAddr) -> bool {
        fs::symlink_metadata(self.path(&ip_file(ip))).is_ok()
    }

    /// The inode of an `ip-` file, if it exists.
    pub fn claim_ino(&self, ip: IpAddr) -> Option<u64> {
        fs::symlink_metadata(self.path(&ip_file(ip)))
            .ok()
            .map(|m| m.ino())
    }

    /// Makes `record` the attachment's reservation: claims its new addresses (never overwriting another
    /// holder's), replaces the previous record `old` if any, and drops addresses `old` held that `record`
    /// does not. `reclaim` lists addresses whose `ip-` file is an orphan of this same attachment and may be
    /// replaced. Visible to every process when this returns; see the module doc for durability.
    pub fn commit(
        &self,
        record: &Record,
        old: Option<&Stored>,
        reclaim: &[IpAddr],
    ) -> CniResult<()> {
        let tmp = self.write_temp(record)?;
        let result = self.link_all(&tmp, record, old, reclaim);
        let _ = fs::remove_file(&tmp);
        result?;
        self.sync_dir_if_asked()
    }

    fn link_all(
        &self,
        tmp: &Path,
        record: &Record,
        old: Option<&Stored>,
        reclaim: &[IpAddr],
    ) -> CniResult<()> {
        let mut claimed = Vec::new();
        for ip in record.addrs() {
            let target = self.path(&ip_file(ip));
            let ours =
                old.is_some_and(|o| self.claim_ino(ip) == Some(o.ino)) || reclaim.contains(&ip);
            let r = if ours {
                self.replace_link(tmp, &target)
            } else {
                fs::hard_link(tmp, &target)
            };
            if let Err(e) = r {
                for c in &claimed {
                    let _ = fs::remove_file(c);
                }
                return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CniError::new(
                        code::ADDRESS_TAKEN,
                        format!(
                            "{ip} was claimed by another process; the store lock is not working"
                        ),
                    )
                } else {
                    self.write_error(format!("cannot claim {}", target.display()), &e)
                });
            }
            if !ours {
                claimed.push(target);
            }
        }
        let att = self.path(&attachment_file(&record.container_id, &record.ifname));
        fs::rename(tmp, &att)
            .map_err(|e| self.write_error(format!("cannot write {}", att.display()), &e))?;
        if let Some(o) = old {
            let keep = record.addrs();
            for ip in o.record.addrs().into_iter().filter(|ip| !keep.contains(ip)) {
                self.unlink_if(ip, o.ino)?;
            }
        }
        Ok(())
    }

    fn replace_link(&self, tmp: &Path, target: &Path) -> std::io::Result<()> {
        let side = side_file(tmp);
        let _ = fs::remove_file(&side);
        fs::hard_link(tmp, &side)?;
        fs::rename(&side, target)
    }

    /// Removes an attachment's reservation, and what a killed commit of it left; returns the addresses
    /// freed. Nothing to remove is success.
    pub fn release(&self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let mut freed = self.release_temporary(container_id, ifname)?;
        let att = self.path(&attachment_file(container_id, ifname));
        let stored = match self.entry(&attachment_file(container_id, ifname))? {
            Entry::Record(s) => s,
            Entry::Missing => return Ok(freed),
            // Its addresses are unknown: GC removes their unreadable or unreferenced claims.
            Entry::Unreadable => return remove(&att).map(|_| freed),
        };
        for ip in stored.record.addrs() {
            if self.unlink_if(ip, stored.ino)? {
                freed.push(ip);
            }
        }
        remove(&att)?;
        self.sync_dir_if_asked()?;
        Ok(freed)
    }

    /// Removes the temporary record of an attachment left by a commit killed midway, with the claims
    /// linked to it and its side link; returns the addresses freed.
    fn release_temporary(&self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let name = temp_file(container_id, ifname);
        let mut freed = Vec::new();
        if let Entry::Record(s) = self.entry(&name)? {
            for ip in s.record.addrs() {
                if self.unlink_if(ip, s.ino)? {
                    freed.push(ip);
                }
            }
        }
        let tmp = self.path(&name);
        remove(&side_file(&tmp))?;
        remove(&tmp)?;
        Ok(freed)
    }

    /// Removes `ip-<ip>` if it is the inode `ino`; returns whether it did.
    pub fn unlink_if(&self, ip: IpAddr, ino: u64) -> CniResult<bool> {
        if self.claim_ino(ip) != Some(ino) {
            return Ok(false);
        }
        remove(&self.path(&ip_file(ip)))?;
        Ok(true)
    }

    /// Removes an `ip-` file whatever it holds (admin release, GC of orphans).
    pub fn unlink_claim(&self, ip: IpAddr) -> CniResult<()> {
        remove(&self.path(&ip_file(ip)))
    }

    /// Every `ip-` and `att-` file name in the space, for GC and the admin commands.
    pub fn list(&self) -> CniResult<Listing> {
        let mut l = Listing::default();
        let rd = fs::read_dir(self.dir())
            .map_err(|e| CniError::io(format!("cannot list {}", self.dir().display()), &e))?;
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(ip) = name
                .strip_prefix("ip-")
                .and_then(|a| a.parse::<IpAddr>().ok())
            {
                l.claims.push(ip);
            } else if name.starts_with("att-") {
                l.attachments.push(name.to_string());
            } else if name.starts_with(".tmp-") {
                l.temporaries.push(name.to_string());
            }
        }
        Ok(l)
    }

    fn write_temp(&self, record: &Record) -> CniResult<PathBuf> {
        let tmp = self.path(&temp_file(&record.container_id, &record.ifname));
        // Left by a killed commit of this attachment: its claims name the attachment, so allocation
        // reuses them and GC removes the rest.
        remove(&tmp)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| self.write_error(format!("cannot create {}", tmp.display()), &e))?;
        let mut bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        bytes.push(b'\n');
        let fsync = self.store.fsync;
        let r = f
            .write_all(&bytes)
            .and_then(|_| if fsync { f.sync_all() } else { Ok(()) });
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(self.write_error(format!("cannot write {}", tmp.display()), &e));
        }
        Ok(tmp)
    }

    /// The I/O error (code 5) of a write into the store; a full filesystem (no space, no inodes, or the
    /// quota) is said in words with the directory, since that is what the operator must fix.
    fn write_error(&self, what: String, e: &std::io::Error) -> CniError {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        if !matches!(e.kind(), StorageFull | QuotaExceeded) {
            return CniError::io(what, e);
        }
        CniError::io(
            format!(
                "the filesystem of the store directory {} is full (no space or no inodes left): {what}; \
                 free room there or move ipam.dataDir",
                self.dir().display()
            ),
            e,
        )
    }

    /// Removes an `att-` file whose content is not a record.
    pub fn remove_unreadable(&self, name: &str) -> CniResult<()> {
        if !name.starts_with("att-") || name.contains('/') {
            return Ok(());
        }
        remove(&self.path(name))
    }

    /// Removes a temporary file left by a killed process.
    pub fn remove_temporary(&self, name: &str) -> CniResult<()> {
        if !name.starts_with(".tmp-") || name.contains('/') {
            return Ok(());
        }
        remove(&self.path(name))
    }

    fn sync_dir_if_asked(&self) -> CniResult<()> {
        if self.store.fsync {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Makes the directory's entries durable.
    pub fn sync_dir(&self) -> CniResult<()> {
        fs::File::open(self.dir())
            .and_then(|d| d.sync_all())
            .map_err(|e| CniError::io(format!("cannot sync {}", self.dir().display()), &e))
    }
}

/// What a space directory holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Claimed addresses (`ip-` files).
    pub claims: Vec<IpAddr>,
    /// Attachment record file names (`att-` files).
    pub attachments: Vec<String>,
    /// Temporary files; with the lock held, any that exist were left by a killed process.
    pub temporaries: Vec<String>,
}

fn remove(p: &Path) -> CniResult<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io(format!("cannot remove {}", p.display()), &e)),
    }
}

/// Unix time now, in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The space directories under a data dir (for the admin commands).
pub fn spaces(data_dir: &Path) -> CniResult<Vec<String>> {
    let rd = match fs::read_dir(data_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CniError::io(
                format!("cannot list {}", data_dir.display()),
                &e,
            ))
        }
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_never_leave_the_space() {
        assert_eq!(attachment_file("abc_1.2-3", "eth0"), "att-abc_1.2-3@eth0");
        let n = attachment_file("../../etc/x@y", "a/b\n");
        assert_eq!(n, "att-..%2F..%2Fetc%2Fx%40y@a%2Fb%0A");
        assert!(!n.contains('/') && n.matches('@').count() == 1);
    }
}
