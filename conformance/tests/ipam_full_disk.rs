//! plumb-ipam's file store on a full disk: its `dataDir` on a tiny tmpfs, filled by ADDs until the
//! store cannot take another record, once by bytes (`size=`) and once by inodes (`nr_inodes=`).
//!
//! The ADD that does not fit must answer a clear CNI error (JSON on stdout, code 5, naming the data dir
//! and saying it is out of space) and leave nothing of itself behind (no temporary file, no record, no
//! claim); every reservation made before stays intact and listable; DEL of an existing attachment still
//! works on the full disk, and once it freed room an ADD works again. Needs root (mount).

use conformance::plugin::{Call, Outcome};
use conformance::skip::{is_root, skip};
use conformance::{plumb_bin, TempDir};
use plumb_ipam::store::{FileStore, Stored};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The pool: far more addresses than the tiny filesystems can hold records for.
const RANGE: &str = "10.40.0.0/16";
/// The space the config's records go to (no `network_name`).
const SPACE: &str = "_default";
/// ADDs tried before the test gives up on filling the filesystem.
const MAX_FILL: usize = 5000;

/// A tmpfs mounted on a fresh directory, unmounted on drop (then the directory is removed).
struct Tmpfs {
    dir: PathBuf,
    _mount_point: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=64k`) on a new directory under the temp dir.
    fn mount(options: &str) -> Tmpfs {
        let mount_point = TempDir::new("plumb-full");
        let fs = Tmpfs {
            dir: mount_point.path().to_path_buf(),
            _mount_point: mount_point,
        };
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "plumb-full-disk"])
            .arg(&fs.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o {options} {}: {}",
            fs.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// plumb-ipam on [`RANGE`] with its data dir at `data_dir`.
fn config(data_dir: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "fulldisk", "type": "plumb-ipam",
           "ipam": {"type": "plumb-ipam", "range": RANGE, "dataDir": data_dir}})
}

/// Runs one call of plumb-ipam for container `cid`.
fn call(command: &str, cid: &str, conf: &Value) -> Outcome {
    Call::new(command, cid, "/run/netns/none", "eth0", conf).run(&plumb_bin("plumb-ipam"))
}

/// The address of a successful ADD result.
fn address(result: &Value) -> IpAddr {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    cidr.split('/').next().unwrap().parse().expect("an address")
}

/// The attachment's record, checked to be the holder of `ip`; panics naming what is wrong.
fn intact(store: &FileStore, cid: &str, ip: IpAddr) -> Stored {
    let locked = store.lock(Duration::from_secs(10)).expect("lock store");
    let stored = locked
        .attachment(cid, "eth0")
        .unwrap_or_else(|e| panic!("record of {cid} unreadable: {e}"))
        .unwrap_or_else(|| panic!("record of {cid} is gone"));
    assert_eq!(stored.record.addrs(), vec![ip], "record of {cid} changed");
    assert_eq!(
        locked.claim_ino(ip),
        Some(stored.ino),
        "the claim of {ip} no longer points at {cid}'s record"
    );
    stored
}

/// Every file name in the space directory.
fn files(space_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(space_dir)
        .expect("read space dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Fills a store on a tmpfs mounted with `options`, then checks the full-disk behaviour.
fn full_disk(test: &str, options: &str) {
    if !is_root() {
        skip(test, "needs root to mount a tmpfs");
        return;
    }
    let fs = Tmpfs::mount(options);
    let data_dir = fs.dir.join("data");
    let conf = config(&data_dir);
    let store = FileStore::open(&data_dir, SPACE).expect("open store");
    let space_dir = data_dir.join(SPACE);

    // Fill: ADD until the store fails.
    let mut held: Vec<(String, IpAddr)> = Vec::new();
    let (failed_cid, failure) = loop {
        assert!(
            held.len() < MAX_FILL,
            "{MAX_FILL} ADDs fit on a tmpfs mounted with {options}: the test's filesystem is not small"
        );
        let cid = format!("full{}", held.len());
        let out = call("ADD", &cid, &conf);
        if out.exit != 0 {
            break (cid, out);
        }
        held.push((cid, address(&out.ok())));
    };
    assert!(
        held.len() >= 2,
        "only {} ADDs fit before the store failed: {failure:?}",
        held.len()
    );
    eprintln!(
        "{test}: {} ADDs fit on a tmpfs with {options}; the next answered {}",
        held.len(),
        failure.stdout.trim()
    );

    // The failing ADD: a clear CNI error naming the data dir and the lack of space.
    let err = failure.err(5);
    let msg = err["msg"].as_str().expect("msg");
    assert!(
        msg.contains(&format!("store directory {} is full", space_dir.display())),
        "the error message does not say the store directory is full: {err}"
    );
    assert!(
        msg.contains("ipam.dataDir"),
        "the error message does not name the field to change: {err}"
    );
    assert!(
        err["details"]
            .as_str()
            .is_some_and(|d| d.contains("No space left on device")),
        "the error details do not carry the OS error: {err}"
    );

    // Nothing of the failed ADD is left: no temporary file, no record, no claim without a record.
    let names = files(&space_dir);
    let temporaries: Vec<&String> = names.iter().filter(|n| n.starts_with(".tmp-")).collect();
    assert!(
        temporaries.is_empty(),
        "the failed ADD left temporary files: {temporaries:?}"
    );
    let claims = names.iter().filter(|n| n.starts_with("ip-")).count();
    let records = names.iter().filter(|n| n.starts_with("att-")).count();
    assert_eq!(
        (records, claims),
        (held.len(), held.len()),
        "records and claims on disk after the failed ADD (expected one each per earlier ADD): {names:?}"
    );
    {
        let locked = store.lock(Duration::from_secs(10)).expect("lock store");
        assert!(
            locked
                .attachment(&failed_cid, "eth0")
                .expect("read")
                .is_none(),
            "the failed ADD left a record"
        );
    }

    // Everything stored before is intact and listable.
    for (cid, ip) in &held {
        intact(&store, cid, *ip);
    }
    let list = Command::new(plumb_bin("plumb-ipam"))
        .args(["list", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run plumb-ipam list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "plumb-ipam list failed on the full disk: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    for (cid, ip) in &held {
        assert!(
            listed
                .lines()
                .any(|l| l.contains(&format!(" {ip} ")) && l.contains(cid.as_str())),
            "plumb-ipam list does not show {ip} of {cid}:\n{listed}"
        );
    }

    // A repeated ADD of an existing attachment answers its address (no write needed).
    let (first_cid, first_ip) = held[0].clone();
    assert_eq!(address(&call("ADD", &first_cid, &conf).ok()), first_ip);

    // DEL of an existing attachment works on the full disk and frees its address.
    let (gone_cid, gone_ip) = held.pop().expect("held");
    call("DEL", &gone_cid, &conf).ok();
    {
        let locked = store.lock(Duration::from_secs(10)).expect("lock store");
        assert!(locked
            .attachment(&gone_cid, "eth0")
            .expect("read")
            .is_none());
        assert!(
            !locked.is_claimed(gone_ip),
            "DEL left the claim of {gone_ip}"
        );
    }
    // DEL of the attachment whose ADD failed succeeds too (nothing to remove).
    call("DEL", &failed_cid, &conf).ok();

    // With that room freed, an ADD works again; the others are still intact.
    let again = address(&call("ADD", "fullagain", &conf).ok());
    assert!(
        !held.iter().any(|(_, ip)| *ip == again),
        "ADD after DEL answered {again}, which a live attachment holds"
    );
    for (cid, ip) in &held {
        intact(&store, cid, *ip);
    }
    drop(store);
    drop(fs);
}

#[test]
fn full_disk_by_bytes_fails_add_cleanly_and_del_still_works() {
    full_disk(
        "full_disk_by_bytes_fails_add_cleanly_and_del_still_works",
        "size=64k,nr_inodes=10000",
    );
}

/// On tmpfs a hard link takes an inode of the budget too, so each ADD takes two (its record and its
/// claim): with an even budget the last ADD gets its temporary record and fails at the claim.
#[test]
fn full_disk_by_inodes_at_the_claim_fails_add_cleanly_and_del_still_works() {
    full_disk(
        "full_disk_by_inodes_at_the_claim_fails_add_cleanly_and_del_still_works",
        "size=4m,nr_inodes=48",
    );
}

/// With an odd budget the last ADD cannot even create its temporary record.
#[test]
fn full_disk_by_inodes_at_the_record_fails_add_cleanly_and_del_still_works() {
    full_disk(
        "full_disk_by_inodes_at_the_record_fails_add_cleanly_and_del_still_works",
        "size=4m,nr_inodes=49",
    );
}
