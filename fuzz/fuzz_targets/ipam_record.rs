//! The file store's records, read back from disk where a torn write, a full disk or another program
//! may have left anything: a record parses or not (never a panic), and a parsed record writes back to
//! JSON that parses to the same record; its addresses are those of its `ips` that parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_ipam::store::Record;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<Record>(data) else {
        return;
    };
    let written = serde_json::to_vec(&record).unwrap();
    let back: Record = serde_json::from_slice(&written).unwrap();
    assert_eq!(back, record);
    let addrs = record.addrs();
    assert!(addrs.len() <= record.ips.len());
    assert!(record.is_for(&record.container_id, &record.ifname));
});
