//! Fault injection: shares, kinds, filters, determinism, latency.

mod common;

use common::*;
use plumb_kubeapi::{FaultKind, FaultRule, Faults, Options, Resource, TestApiServer, Verb};
use serde_json::json;
use std::time::{Duration, Instant};

/// Send `n` GETs of one IPBlock, reconnecting after dropped connections;
/// returns the status sequence (0 = dropped).
fn run_gets(server: &TestApiServer, n: usize) -> Vec<u16> {
    let mut c = Conn::connect(server.addr());
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match c.request_with("GET", &format!("{IPB}/f"), &[], None) {
            Ok(r) => {
                if r.status == 429 {
                    assert_eq!(r.header("retry-after"), Some("1"));
                    let st = assert_status(&r, 429, "TooManyRequests");
                    assert_eq!(st["details"]["retryAfterSeconds"], 1);
                } else if r.status == 500 {
                    assert_status(&r, 500, "InternalError");
                } else {
                    assert_eq!(r.status, 200);
                }
                out.push(r.status);
            }
            Err(_) => {
                out.push(0);
                c = Conn::connect(server.addr());
            }
        }
    }
    out
}

fn share(statuses: &[u16], code: u16) -> f64 {
    statuses.iter().filter(|&&s| s == code).count() as f64 / statuses.len() as f64
}

#[test]
fn shares_over_1000_requests_are_close_and_deterministic() {
    let server = TestApiServer::start(Options::default()).unwrap();
    server
        .put_object(Resource::IpBlocks, ipblock("f", "10.0.0.0/24"))
        .unwrap();
    let faults = Faults {
        seed: 7,
        rules: vec![
            FaultRule::new(FaultKind::TooManyRequests, 0.10),
            FaultRule::new(FaultKind::InternalError, 0.05),
            FaultRule::new(FaultKind::DropConnection, 0.05),
        ],
        ..Faults::default()
    };
    server.set_faults(faults.clone());
    let first = run_gets(&server, 1000);
    let (s429, s500, s0) = (share(&first, 429), share(&first, 500), share(&first, 0));
    assert!((0.07..=0.13).contains(&s429), "429 share {s429}");
    assert!((0.03..=0.07).contains(&s500), "500 share {s500}");
    assert!((0.03..=0.07).contains(&s0), "drop share {s0}");
    let counts = server.counts();
    assert_eq!(counts.get(Resource::IpBlocks, Verb::Get), 1000);
    let injected = first.iter().filter(|&&s| s != 200).count() as u64;
    assert_eq!(counts.faults_injected, injected);
    let log = server.requests();
    assert_eq!(
        log.iter()
            .filter(|r| r.fault == Some(FaultKind::DropConnection))
            .count() as f64
            / 1000.0,
        s0
    );
    assert!(log
        .iter()
        .filter(|r| r.status == 0)
        .all(|r| r.fault == Some(FaultKind::DropConnection)));
    // Same seed, same sequence.
    server.set_faults(faults);
    assert_eq!(run_gets(&server, 1000), first);
    // Another seed, another sequence.
    server.set_faults(Faults {
        seed: 8,
        rules: vec![FaultRule::new(FaultKind::TooManyRequests, 0.10)],
        ..Faults::default()
    });
    let other = run_gets(&server, 1000);
    assert_ne!(other, first);
    server.clear_faults();
    assert!(run_gets(&server, 50).iter().all(|&s| s == 200));
}

#[test]
fn conflicts_hit_writes_only_and_filters_apply() {
    let server = TestApiServer::start(Options::default()).unwrap();
    let mut c = Conn::connect(server.addr());
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::Conflict, 1.0)],
        ..Faults::default()
    });
    assert_eq!(c.get(IPB).status, 200);
    let st = assert_status(&c.post(IPB, &ipblock("w", "1")), 409, "Conflict");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("ipblocks.plumb.dev \"w\""));
    assert!(server.objects(Resource::IpBlocks).is_empty());

    // Only Pod creates fail; IPBlock creates and Pod reads go through.
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::InternalError, 1.0)
            .verbs(&[Verb::Create])
            .resources(&[Resource::Pods])],
        ..Faults::default()
    });
    assert_eq!(c.post(IPB, &ipblock("w", "1")).status, 201);
    assert_status(
        &c.post("/api/v1/namespaces/a/pods", &pod("a", "p", "", "Pending")),
        500,
        "InternalError",
    );
    assert_eq!(c.get("/api/v1/pods").status, 200);

    // max_hits: exactly the next two updates conflict.
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::Conflict, 1.0)
            .verbs(&[Verb::Update])
            .max_hits(2)],
        ..Faults::default()
    });
    let cur = c.get(&format!("{IPB}/w")).json();
    let mut upd = cur.clone();
    upd["spec"]["cidr"] = json!("2");
    assert_eq!(c.put(&format!("{IPB}/w"), &upd).status, 409);
    assert_eq!(c.put(&format!("{IPB}/w"), &upd).status, 409);
    assert_eq!(c.put(&format!("{IPB}/w"), &upd).status, 200);
}

#[test]
fn drop_response_commits_the_write() {
    let server = TestApiServer::start(Options::default()).unwrap();
    let mut c = Conn::connect(server.addr());
    server.set_faults(Faults {
        seed: 3,
        rules: vec![FaultRule::new(FaultKind::DropResponse, 1.0).max_hits(1)],
        ..Faults::default()
    });
    assert!(c
        .request_with(
            "POST",
            IPB,
            &[],
            Some(ipblock("lost", "1").to_string().as_bytes())
        )
        .is_err());
    assert_eq!(server.objects(Resource::IpBlocks).len(), 1);
    let mut c = Conn::connect(server.addr());
    assert_status(&c.post(IPB, &ipblock("lost", "1")), 409, "AlreadyExists");
    let log = server.requests();
    assert_eq!(log[0].status, 0);
    assert_eq!(log[0].fault, Some(FaultKind::DropResponse));
}

#[test]
fn latency_is_applied() {
    let server = TestApiServer::start(Options {
        faults: Faults {
            latency: Duration::from_millis(60),
            ..Faults::default()
        },
        ..Options::default()
    })
    .unwrap();
    let mut c = Conn::connect(server.addr());
    let t = Instant::now();
    for _ in 0..3 {
        assert_eq!(c.get("/api/v1/nodes").status, 200);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(180),
        "{:?}",
        t.elapsed()
    );
    server.clear_faults();
    let t = Instant::now();
    c.get("/api/v1/nodes");
    assert!(t.elapsed() < Duration::from_millis(60));
}
