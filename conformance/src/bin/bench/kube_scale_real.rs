//! The real kube-apiserver of mode `kube-scale-real`: the kube-real lane's control plane
//! (`scripts/control-plane`: etcd + kube-apiserver on loopback, RBAC, an audit log), with
//! `deploy/crds` and `deploy/rbac.yaml` applied as they are. The plugin's library runs with a
//! TokenRequest token of the `kube-system/plumb` service account and talks to a loopback forwarder
//! (`conformance::forward`) instead of the server, so:
//!
//! - **requests** are exact, from the audit log: the events of plumb's service account whose
//!   `requestReceivedTimestamp` falls inside the measured call (calls are measured one at a time);
//! - **response bytes** are what the forwarder relayed from the server to the plugin during the call:
//!   the TCP payload, so TLS records, the handshake (one per call: one client per call) and HTTP
//!   headers are included, not only the JSON bodies the test server counts.
//!
//! Filler blocks are created through the API as the admin (no store back door on a real server),
//! [`FILL_THREADS`] at once, each thread with its own client.

use super::kube_real::{apply_file, kubeconfig, wait_served, PLUMB_USER};
use super::kube_scale::{Counted, Mark, Server, ServerTime};
use conformance::control_plane::ControlPlane;
use conformance::forward::Forward;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use plumb_ipam_kube::crd::IPBlock;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Concurrent creates of filler blocks.
const FILL_THREADS: usize = 32;
/// Objects per page when the bench reads every block back.
const READ_PAGE: u32 = 2000;

/// A started control plane, the forwarder the plugin talks through and the kubeconfigs.
pub(super) struct RealServer {
    cp: &'static ControlPlane,
    forward: Forward,
    /// The plugin's: plumb's service account, through the forwarder.
    kubeconfig: PathBuf,
    /// The admin's (client certificate), straight to the server: filler and read-back.
    admin: PathBuf,
}

impl RealServer {
    /// Starts the control plane (kept until the bench exits), applies deploy/, starts the forwarder.
    pub(super) fn start() -> Result<RealServer, String> {
        let cp = control_plane()?;
        println!(
            "control plane: kube-apiserver {} (etcd from scripts/control-plane) ready in {:.1}s at {}",
            cp.version,
            cp.start_seconds,
            cp.url()
        );
        let root = conformance::workspace_root();
        let crds = apply_file(cp, &root.join("deploy/crds/ipblocks.plumb.dev.yaml"))?;
        apply_file(cp, &root.join("deploy/rbac.yaml"))?;
        for name in crds {
            wait_served(cp, &name)?;
        }
        let dir = cp.scratch("scale");
        let (forward, kubeconfig) = forwarded_kubeconfig(cp, &dir, "plumb")?;
        let admin = dir.join("admin.kubeconfig");
        cp.write_admin_kubeconfig(&admin);
        Ok(RealServer {
            cp,
            forward,
            kubeconfig,
            admin,
        })
    }

    /// A current-thread runtime and an IPBlock API as the admin.
    fn admin_api(&self) -> Result<(tokio::runtime::Runtime, Api<IPBlock>), String> {
        admin_api(&self.admin)
    }
}

/// The bench's one control plane, started on first use (stopped at exit by its own hook); the error
/// of a failed start, which is not retried.
pub(super) fn control_plane() -> Result<&'static ControlPlane, String> {
    static CP: std::sync::OnceLock<Result<ControlPlane, String>> = std::sync::OnceLock::new();
    CP.get_or_init(|| ControlPlane::start().map_err(|e| format!("control plane: {e}")))
        .as_ref()
        .map_err(|e| e.clone())
}

fn admin_api(path: &Path) -> Result<(tokio::runtime::Runtime, Api<IPBlock>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let api = rt.block_on(async {
        let kc = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        Ok::<_, String>(Api::<IPBlock>::all(client))
    })?;
    Ok((rt, api))
}

/// Microseconds since the epoch of an RFC 3339 UTC time as the audit log writes it
/// (`2026-11-30T17:30:00.123456Z`).
fn audit_micros(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros: i64 = format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()?;
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60 + s) * 1_000_000) + micros)
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64
}

impl Server for RealServer {
    fn describe(&self) -> String {
        format!(
            "kube-apiserver {} at {}; the plugin as kube-system/plumb through a loopback forwarder at {} (requests: audit-log events of its service account received during the call; bytes: TCP payload relayed server->plugin, TLS handshake and HTTP headers included)",
            self.cp.version,
            self.cp.url(),
            self.forward.https_url()
        )
    }

    fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    fn blocks(&self) -> Result<Vec<Value>, String> {
        let (rt, api) = self.admin_api()?;
        rt.block_on(async {
            let mut lp = ListParams::default().limit(READ_PAGE);
            let mut out = Vec::new();
            loop {
                let l = api
                    .list(&lp)
                    .await
                    .map_err(|e| format!("list ipblocks: {e}"))?;
                for b in l.items {
                    out.push(serde_json::to_value(&b).map_err(|e| e.to_string())?);
                }
                match l.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = lp.continue_token(&c),
                    None => return Ok(out),
                }
            }
        })
    }

    fn create_blocks(&self, blocks: Vec<Value>) -> Result<(), String> {
        let blocks: Vec<IPBlock> = blocks
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..FILL_THREADS)
                .map(|_| {
                    s.spawn(|| -> Result<(), String> {
                        let (rt, api) = self.admin_api()?;
                        rt.block_on(async {
                            loop {
                                let i = next.fetch_add(1, Ordering::SeqCst);
                                let Some(b) = blocks.get(i) else {
                                    return Ok(());
                                };
                                let mut tries = 0;
                                loop {
                                    match api.create(&PostParams::default(), b).await {
                                        Ok(_) => break,
                                        // The server shedding load (429) or a broken connection:
                                        // again, a few times.
                                        Err(kube::Error::Api(e)) if e.code != 429 => {
                                            return Err(format!(
                                                "create filler {:?}: {e}",
                                                b.metadata.name
                                            ))
                                        }
                                        Err(e) if tries >= 5 => {
                                            return Err(format!(
                                                "create filler {:?}: {e}",
                                                b.metadata.name
                                            ))
                                        }
                                        Err(_) => {
                                            tries += 1;
                                            tokio::time::sleep(Duration::from_millis(200)).await;
                                        }
                                    }
                                }
                            }
                        })
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a fill thread panicked"))
                .collect::<Result<Vec<()>, String>>()
        })?;
        Ok(())
    }

    fn fill_how(&self) -> &'static str {
        "created through the API as the admin, 32 creates at once"
    }

    fn mark(&self) -> Mark {
        mark(self.cp, &self.forward)
    }

    fn counted(&self, spans: &[(Mark, Mark)]) -> Result<Vec<Counted>, String> {
        counted(self.cp, PLUMB_USER, spans)
    }
}

/// The counters of `cp`'s audit log and `forward`'s bytes now.
pub(super) fn mark(cp: &ControlPlane, forward: &Forward) -> Mark {
    Mark {
        at: SystemTime::now(),
        requests: 0,
        bytes: forward.counts().to_client,
        creates: 0,
        audit: cp.audit_mark(),
    }
}

/// What `user` cost in each (before, after) span: its audit-log events received inside the span, and
/// the forwarder's bytes to the client between the marks.
pub(super) fn counted(
    cp: &ControlPlane,
    user: &str,
    spans: &[(Mark, Mark)],
) -> Result<Vec<Counted>, String> {
    let Some(first) = spans.first() else {
        return Ok(Vec::new());
    };
    // (received at, verb, code, server time in µs) of the user's requests.
    let events: Vec<(i64, String, u64, i64)> = cp
        .audit_events(first.0.audit)
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .map(|e| {
            let at = e["requestReceivedTimestamp"]
                .as_str()
                .and_then(audit_micros)
                .ok_or_else(|| format!("audit event without a readable time: {e}"))?;
            let done = e["stageTimestamp"]
                .as_str()
                .and_then(audit_micros)
                .unwrap_or(at);
            Ok((
                at,
                e["verb"].as_str().unwrap_or("?").to_string(),
                e["responseStatus"]["code"].as_u64().unwrap_or(0),
                done - at,
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok(spans
        .iter()
        .map(|(a, b)| {
            let (from, to) = (micros(a.at), micros(b.at));
            let inside: Vec<&(i64, String, u64, i64)> =
                events.iter().filter(|e| e.0 >= from && e.0 <= to).collect();
            let time = |verbs: &[&str]| {
                let us: i64 = inside
                    .iter()
                    .filter(|e| verbs.contains(&e.1.as_str()))
                    .map(|e| e.3.max(0))
                    .sum();
                Duration::from_micros(us as u64)
            };
            Counted {
                requests: inside.len() as u64,
                bytes: b.bytes - a.bytes,
                creates: inside.iter().filter(|e| e.1 == "create").count() as u64,
                conflicts: Some(inside.iter().filter(|e| e.2 == 409).count() as u64),
                server_time: Some(ServerTime {
                    list: time(&["list"]),
                    write: time(&["create", "update", "patch"]),
                }),
            }
        })
        .collect())
}

/// A loopback forwarder to `cp` and a kubeconfig in `dir` for service account `kube-system/<sa>` that
/// reaches the server through it (the serving certificate names 127.0.0.1, so the CA still checks).
pub(super) fn forwarded_kubeconfig(
    cp: &ControlPlane,
    dir: &Path,
    sa: &str,
) -> Result<(Forward, PathBuf), String> {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, cp.ca_pem()).map_err(|e| e.to_string())?;
    let target = cp
        .url()
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| format!("control plane URL {}: {e}", cp.url()))?;
    let forward = Forward::start(None, target).map_err(|e| format!("forwarder: {e}"))?;
    let direct = kubeconfig(cp, dir, sa, &ca, "kube-system", sa)?;
    let text = std::fs::read_to_string(&direct).map_err(|e| e.to_string())?;
    let forwarded = dir.join(format!("{sa}-forwarded.kubeconfig"));
    std::fs::write(&forwarded, text.replace(cp.url(), &forward.https_url()))
        .map_err(|e| e.to_string())?;
    Ok((forward, forwarded))
}

#[cfg(test)]
mod tests {
    use super::audit_micros;

    #[test]
    fn audit_times_read_as_epoch_micros() {
        assert_eq!(audit_micros("1970-01-01T00:00:00.000001Z"), Some(1));
        assert_eq!(
            audit_micros("2026-11-30T17:30:00.123456Z"),
            Some(1_796_059_800_123_456)
        );
        assert_eq!(
            audit_micros("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000)
        );
        assert_eq!(audit_micros("not a time"), None);
    }
}
