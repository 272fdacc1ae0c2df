//! What a power loss can leave in the file store without fsync: names whose content never reached the
//! disk (empty files). Allocation steps over them, DEL and re-ADD work, GC removes them; with
//! `"fsync": true` the store behaves the same while syncing every change.

use conformance::plugin::Call;
use conformance::{plumb_bin, TempDir};
use serde_json::{json, Value};
use std::path::Path;

fn config(data: &Path, fsync: bool) -> Value {
    json!({"cniVersion": "1.1.0", "name": "pl", "type": "plumb-ipam",
           "ipam": {"type": "plumb-ipam", "range": "10.61.0.0/29", "dataDir": data, "fsync": fsync}})
}

fn call(cmd: &str, cid: &str, conf: &Value) -> conformance::plugin::Outcome {
    Call::new(cmd, cid, "/run/netns/none", "eth0", conf).run(&plumb_bin("plumb-ipam"))
}

fn address(out: &conformance::plugin::Outcome) -> String {
    out.ok()["ips"][0]["address"].as_str().unwrap().to_string()
}

fn names(space: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(space)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ip-") || n.starts_with("att-"))
        .collect();
    v.sort();
    v
}

#[test]
fn empty_files_left_by_a_power_loss_are_stepped_over_and_collected() {
    let data = TempDir::new("pwr");
    let conf = config(data.path(), false);
    assert_eq!(address(&call("ADD", "a", &conf)), "10.61.0.1/29");
    let space = data.path().join("_default");
    // As if the power went after the names reached the disk but not their content.
    std::fs::write(space.join("ip-10.61.0.2"), b"").unwrap();
    std::fs::write(space.join("att-b@eth0"), b"").unwrap();
    // A new attachment steps over the unreadable claim.
    assert_eq!(address(&call("ADD", "c", &conf)), "10.61.0.3/29");
    // A static request for it is refused with the way out named.
    let statik = {
        let mut c = conf.clone();
        c["runtimeConfig"] = json!({"ips": ["10.61.0.2/29"]});
        c
    };
    let e = call("ADD", "d", &statik).err(101);
    assert!(e["msg"].as_str().unwrap().contains("unreadable"), "{e}");
    // The attachment whose record is unreadable can be added again and deleted.
    assert_eq!(address(&call("ADD", "b", &conf)), "10.61.0.4/29");
    call("DEL", "b", &conf).ok();
    std::fs::write(space.join("att-b@eth0"), b"").unwrap();
    call("DEL", "b", &conf).ok();
    assert!(!space.join("att-b@eth0").exists());
    // GC removes the unreadable claim and keeps the valid reservations.
    std::fs::write(space.join("att-x@eth0"), b"{").unwrap();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "c", "ifname": "eth0"}]);
    Call::new("GC", "", "", "", &gc)
        .without("CNI_CONTAINERID")
        .without("CNI_IFNAME")
        .without("CNI_NETNS")
        .run(&plumb_bin("plumb-ipam"))
        .ok();
    assert_eq!(
        names(&space),
        ["att-a@eth0", "att-c@eth0", "ip-10.61.0.1", "ip-10.61.0.3"]
    );
    // The freed address is handed out again: the four free addresses go to four new attachments.
    let mut got: Vec<String> = ["e", "f", "g", "h"]
        .iter()
        .map(|c| address(&call("ADD", c, &conf)))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "10.61.0.2/29",
            "10.61.0.4/29",
            "10.61.0.5/29",
            "10.61.0.6/29"
        ]
    );
    call("ADD", "i", &conf).err(100);
}

#[test]
fn fsync_option_keeps_the_same_behaviour() {
    let data = TempDir::new("fsy");
    let conf = config(data.path(), true);
    let first = address(&call("ADD", "a", &conf));
    assert_eq!(first, "10.61.0.1/29");
    assert_eq!(address(&call("ADD", "a", &conf)), first);
    assert_eq!(address(&call("ADD", "b", &conf)), "10.61.0.2/29");
    call("DEL", "a", &conf).ok();
    call("DEL", "a", &conf).ok();
    assert_eq!(
        names(&data.path().join("_default")),
        ["att-b@eth0", "ip-10.61.0.2"]
    );
    let mut bad = conf.clone();
    bad["ipam"]["fsync"] = json!("yes");
    call("ADD", "c", &bad).err(7);
}
