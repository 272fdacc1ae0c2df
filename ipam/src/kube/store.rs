//! The Kubernetes store at work: one listing of the space's blocks, one write per range, conflicts
//! re-planned with jitter, everything inside one deadline per CNI call. kube's own retry is off so the
//! deadline holds; this module retries what is worth retrying (409, 429, 5xx, broken connections)
//! itself until the deadline, then answers code 11 with the last reason.

use super::blocks::{plan_add, plan_removal, reservations, Write};
use super::crd::{IPBlock, SPACE_LABEL};
use crate::alloc::Attachment;
use crate::config::IpamConfig;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use plumb_cni::{code, CniError, CniResult};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Where and as whom the store talks to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `kubernetes.kubeconfig`; `None` means the in-cluster service account.
    pub kubeconfig: Option<String>,
    /// This node's name: `PLUMB_NODE_NAME`, else `kubernetes.nodeName`, else the host name.
    pub node: String,
    /// Deadline of one CNI call (`kubernetes.timeoutSeconds`).
    pub timeout: Duration,
}

/// A connected store for one space.
pub struct KubeStore {
    api: Api<IPBlock>,
    space: String,
    node: String,
    deadline: Instant,
    last_error: String,
}

/// Runs `work` on a current-thread runtime, bounded by the settings' deadline (code 11 past it).
pub fn run<T>(
    settings: &KubeSettings,
    space: &str,
    work: impl AsyncFnOnce(&mut KubeStore) -> CniResult<T>,
) -> CniResult<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::io("cannot start the Kubernetes client runtime", &e))?;
    let deadline = Instant::now() + settings.timeout;
    rt.block_on(async {
        let client = client(settings).await?;
        let mut store = KubeStore {
            api: Api::all(client),
            space: space.to_string(),
            node: settings.node.clone(),
            deadline,
            last_error: String::new(),
        };
        match tokio::time::timeout_at(deadline.into(), work(&mut store)).await {
            Ok(r) => r,
            Err(_) => Err(store.too_late()),
        }
    })
}

async fn client(s: &KubeSettings) -> CniResult<Client> {
    let unreachable =
        |what: String| move |e: String| CniError::new(code::TRY_AGAIN_LATER, what).caused_by(e);
    let mut config = match &s.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                CniError::config(format!("ipam.kubernetes.kubeconfig {path}: cannot read it"))
                    .caused_by(e)
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    CniError::config(format!("ipam.kubernetes.kubeconfig {path} is not usable"))
                        .caused_by(e)
                })?
        }
        None => Config::incluster().map_err(|e| {
            CniError::config("no ipam.kubernetes.kubeconfig and no in-cluster service account")
                .caused_by(e)
        })?,
    };
    config.default_retry = false;
    config.read_timeout = Some(s.timeout);
    config.connect_timeout = Some(s.timeout);
    // The host and port only: a URL's user-info part is a credential.
    let url = &config.cluster_url;
    log::debug!(
        "kubernetes client: {}://{}{} as node {} (kubeconfig {})",
        url.scheme_str().unwrap_or("https"),
        url.host().unwrap_or("?"),
        url.port_u16().map(|p| format!(":{p}")).unwrap_or_default(),
        s.node,
        s.kubeconfig
            .as_deref()
            .unwrap_or("in-cluster service account")
    );
    logged_client(config)
        .map_err(|e| unreachable("cannot build the Kubernetes client".into())(e.to_string()))
}

/// A client whose every request is logged at debug level as method and path (with the query): never
/// a header, so never the bearer token, and never a body.
fn logged_client(config: Config) -> Result<Client, kube::Error> {
    let log = tower::util::MapRequestLayer::new(|req: http::Request<kube::client::Body>| {
        log::debug!(
            "kubernetes request: {} {}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&log)
        .build())
}

/// What to do with an API error: retry (after re-listing) or give up with this CNI error.
enum Verdict {
    Retry,
    Fail(CniError),
}

fn judge(e: kube::Error, what: &str) -> Verdict {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 409 | 404 | 429 | 500 | 502 | 503 | 504) => {
            Verdict::Retry
        }
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Verdict::Fail(
            CniError::new(
                code::IO_FAILURE,
                format!(
                    "{what}: the API refused plumb-ipam's credentials ({})",
                    s.code
                ),
            )
            .caused_by(&e),
        ),
        kube::Error::Api(_) => {
            Verdict::Fail(CniError::new(code::IO_FAILURE, what.to_string()).caused_by(&e))
        }
        _ => Verdict::Retry, // transport: connection refused, reset, timed out
    }
}

impl KubeStore {
    fn too_late(&self) -> CniError {
        CniError::new(
            code::TRY_AGAIN_LATER,
            "the Kubernetes API did not answer in time (ipam.kubernetes.timeoutSeconds); try again later",
        )
        .caused_by(if self.last_error.is_empty() { "no answer".to_string() } else { self.last_error.clone() })
    }

    async fn pause(&self, attempt: u32) {
        // Jitter from the clock: nodes that collided retry at different moments.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base = 5u64 << attempt.min(6);
        let ms = base + (nanos as u64 % (base + 1));
        let wake = Instant::now() + Duration::from_millis(ms);
        tokio::time::sleep_until(wake.min(self.deadline).into()).await;
    }

    /// Lists every block of the space.
    async fn list(&mut self) -> Result<Vec<IPBlock>, Verdict> {
        let lp = ListParams::default().labels(&format!(
            "{SPACE_LABEL}={}",
            super::blocks::space_hash(&self.space)
        ));
        match self.api.list(&lp).await {
            Ok(l) => Ok(l
                .items
                .into_iter()
                .filter(|b| b.spec.space == self.space)
                .collect()),
            Err(e) => {
                self.last_error = format!("list ipblocks: {e}");
                Err(judge(e, "cannot list IPBlocks"))
            }
        }
    }

    async fn write(&mut self, w: &Write) -> Result<(), Verdict> {
        let pp = PostParams::default();
        let r = match w {
            Write::Create(b) => self.api.create(&pp, b).await.map(|_| ()),
            Write::Replace(b) => self
                .api
                .replace(b.metadata.name.as_deref().unwrap_or_default(), &pp, b)
                .await
                .map(|_| ()),
        };
        r.map_err(|e| {
            self.last_error = format!(
                "write ipblock {}: {e}",
                w.block().metadata.name.as_deref().unwrap_or("?")
            );
            judge(e, "cannot write an IPBlock")
        })
    }

    /// Lists, retrying until the deadline.
    pub async fn list_retrying(&mut self) -> CniResult<Vec<IPBlock>> {
        let mut attempt = 0;
        loop {
            match self.list().await {
                Ok(b) => return Ok(b),
                Err(Verdict::Fail(e)) => return Err(e),
                Err(Verdict::Retry) => {
                    attempt += 1;
                    self.pause(attempt).await;
                }
            }
        }
    }

    /// ADD: one address per range of `cfg` for `who` (idempotent); statics placed per range.
    /// `before` is set, at the first listing, to what `who` held before this call wrote anything, so a
    /// failed ADD can remove exactly what it added without a listing of its own; it stays `None` when no
    /// listing succeeded (then nothing was written).
    pub async fn allocate(
        &mut self,
        cfg: &IpamConfig,
        who: &Attachment,
        wanted: &[Option<IpAddr>],
        now: u64,
        before: &mut Option<Vec<IpAddr>>,
    ) -> CniResult<Vec<IpAddr>> {
        let mut attempt = 0;
        'again: loop {
            let blocks = self.list_retrying().await?;
            if before.is_none() {
                *before = Some(
                    reservations(&blocks)
                        .into_iter()
                        .filter(|(_, a)| a.is_for(&who.container_id, &who.ifname))
                        .map(|(ip, _)| ip)
                        .collect(),
                );
            }
            let mut got = Vec::with_capacity(cfg.ranges.len());
            for (i, range) in cfg.ranges.iter().enumerate() {
                let plan = plan_add(&blocks, &self.space, &self.node, range, who, wanted[i], now)?;
                if let Some(w) = &plan.write {
                    match self.write(w).await {
                        Ok(()) => {}
                        Err(Verdict::Fail(e)) => return Err(e),
                        Err(Verdict::Retry) => {
                            attempt += 1;
                            self.pause(attempt).await;
                            continue 'again;
                        }
                    }
                }
                got.push(plan.ip);
            }
            return Ok(got);
        }
    }

    /// Removes every reservation `drop` selects, re-planning on conflicts; returns the freed addresses.
    pub async fn remove(
        &mut self,
        drop: impl Fn(IpAddr, &super::crd::Allocation) -> bool,
    ) -> CniResult<Vec<IpAddr>> {
        let mut attempt = 0;
        let mut freed_all = Vec::new();
        'again: loop {
            let blocks = self.list_retrying().await?;
            let (writes, freed) = plan_removal(&blocks, &drop);
            for w in &writes {
                match self.write(w).await {
                    Ok(()) => {}
                    Err(Verdict::Fail(e)) => return Err(e),
                    Err(Verdict::Retry) => {
                        attempt += 1;
                        self.pause(attempt).await;
                        continue 'again;
                    }
                }
            }
            freed_all.extend(freed);
            return Ok(freed_all);
        }
    }

    /// Removes the given addresses of one attachment (the rollback of a failed ADD).
    pub async fn remove_addresses(
        &mut self,
        container_id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> CniResult<Vec<IpAddr>> {
        self.remove(|ip, a| a.is_for(container_id, ifname) && ips.contains(&ip))
            .await
    }

    /// The addresses an attachment holds.
    pub async fn held(&mut self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let blocks = self.list_retrying().await?;
        Ok(reservations(&blocks)
            .into_iter()
            .filter(|(_, a)| a.is_for(container_id, ifname))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }
}
