//! The Kubernetes store at work: one listing of what the call needs (the node's own blocks for ADD and
//! GC, the attachment's blocks for DEL and CHECK), one write per range, conflicts re-planned with
//! jitter, everything inside one deadline per CNI call. The rare paths (claiming a block when the
//! blind creates at the node's positions keep colliding, borrowing, adopting, a first call after an
//! upgrade) read the whole space in pages of [`PAGE`]. kube's own retry is off so the deadline holds;
//! this module retries what is worth retrying (409, 429, 5xx, broken connections) itself until the
//! deadline, then answers code 11 with the last reason.

use super::blocks::{
    attachment_label, claim_at, free_in_page, holds, index_labels, node_label, pick_for, plan_add,
    plan_own, plan_removal, relabel, reservations, subnet, Write,
};
use super::crd::{IPBlock, SPACE_LABEL};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use plumb_cni::{code, CniError, CniResult};
use plumb_ipam::alloc::Attachment;
use plumb_ipam::config::{IpamConfig, KubeSettings};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Objects per page of the paged listings of a whole space.
pub const PAGE: u32 = 250;
/// Blind creates at the node's next free positions before an ADD reads the space (in pages) instead.
/// Each costs one small request (a 409 `Status` when taken); at 95 % of the blocks claimed, 8 of them
/// find a free one in two ADDs of three.
pub const PROBES: usize = 8;

/// What reading the space page by page found.
enum Scan {
    /// A page proved this position unclaimed.
    Free(plumb_ipam::range::Subnet),
    /// No page did: every block of the space.
    All(Vec<IPBlock>),
}

/// Whether the node can trust the holder and attachment labels of the blocks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Index {
    /// Yes: the node never ran an older plumb, or it has relabelled its blocks already.
    Trusted,
    /// Not yet: read the space once (paged), relabel the blocks the node holds, then write the
    /// marker file, if any, so later calls skip this.
    Check(Option<PathBuf>),
}

/// Which blocks a listing asks for.
#[derive(Debug, Clone)]
pub enum Query {
    /// The blocks the node owns or holds a reservation in (its holder label).
    Own,
    /// The blocks holding a reservation of (containerID, ifname) (its attachment label).
    Attachment(String, String),
    /// One block, by name (a field selector; the node role has `list`, not `get`).
    Named(String),
    /// Every block of the space, in pages.
    Space,
}

/// A connected store for one space.
pub struct KubeStore {
    api: Api<IPBlock>,
    space: String,
    node: String,
    deadline: Instant,
    last_error: String,
    index: Index,
}

/// Runs `work` on a current-thread runtime, bounded by the settings' deadline (code 11 past it).
pub fn run<T>(
    settings: &KubeSettings,
    space: &str,
    index: Index,
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
            index,
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

/// What to do with an API error: retry (after re-listing), try another block position (a create
/// found the block existing), or give up with this CNI error.
enum Verdict {
    Retry,
    Taken,
    Fail(CniError),
}

fn judge(e: kube::Error, what: &str) -> Verdict {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 409 | 404 | 410 | 429 | 500 | 502 | 503 | 504) => {
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

    fn params(&self, q: &Query) -> ListParams {
        let space = format!("{SPACE_LABEL}={}", super::blocks::space_hash(&self.space));
        match q {
            Query::Own => {
                ListParams::default().labels(&format!("{space},{}", node_label(&self.node)))
            }
            Query::Attachment(c, i) => {
                ListParams::default().labels(&format!("{space},{}", attachment_label(c, i)))
            }
            Query::Named(n) => ListParams::default()
                .labels(&space)
                .fields(&format!("metadata.name={n}")),
            Query::Space => ListParams::default().labels(&space).limit(PAGE),
        }
    }

    /// One listing (every page of it); blocks of other spaces with the same hash are dropped.
    async fn list(&mut self, q: &Query) -> Result<Vec<IPBlock>, Verdict> {
        let mut lp = self.params(q);
        let mut out = Vec::new();
        loop {
            match self.api.list(&lp).await {
                Ok(l) => {
                    out.extend(l.items.into_iter().filter(|b| b.spec.space == self.space));
                    match l.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(c) => lp = lp.continue_token(&c),
                        None => return Ok(out),
                    }
                }
                Err(e) => {
                    self.last_error = format!("list ipblocks: {e}");
                    return Err(judge(e, "cannot list IPBlocks"));
                }
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
            match (&e, w) {
                (kube::Error::Api(s), Write::Create(_)) if s.code == 409 => Verdict::Taken,
                _ => judge(e, "cannot write an IPBlock"),
            }
        })
    }

    /// Lists, retrying until the deadline.
    pub async fn list_retrying(&mut self, q: &Query) -> CniResult<Vec<IPBlock>> {
        let mut attempt = 0;
        loop {
            match self.list(q).await {
                Ok(b) => return Ok(b),
                Err(Verdict::Fail(e)) => return Err(e),
                Err(_) => {
                    attempt += 1;
                    self.pause(attempt).await;
                }
            }
        }
    }

    /// With [`Index::Check`]: reads the whole space (paged) once, relabels the blocks this node holds
    /// whose labels an older plumb left stale or missing, then trusts the labels (and writes the marker
    /// file so later calls on this node skip the read).
    pub async fn ensure_indexed(&mut self) -> CniResult<()> {
        let Index::Check(marker) = self.index.clone() else {
            return Ok(());
        };
        let mut attempt = 0;
        'again: loop {
            let all = self.list_retrying(&Query::Space).await?;
            let stale: Vec<IPBlock> = all
                .into_iter()
                .filter(|b| {
                    holds(b, &self.node) && b.metadata.labels.as_ref() != Some(&index_labels(b))
                })
                .collect();
            for mut nb in stale {
                relabel(&mut nb);
                match self.write(&Write::Replace(nb)).await {
                    Ok(()) => {}
                    Err(Verdict::Fail(e)) => return Err(e),
                    Err(_) => {
                        attempt += 1;
                        self.pause(attempt).await;
                        continue 'again;
                    }
                }
            }
            break;
        }
        if let Some(m) = marker {
            // Best effort: without the marker the next call checks again.
            let _ = std::fs::write(&m, b"plumb-ipam: this node's IPBlocks carry index labels\n");
        }
        self.index = Index::Trusted;
        Ok(())
    }

    /// ADD: one address per range of `cfg` for `who` (idempotent); statics placed per range.
    /// `before` is set, at the first listing, to what `who` held before this call wrote anything, so a
    /// failed ADD can remove exactly what it added without a listing of its own; it stays `None` when no
    /// listing succeeded (then nothing was written).
    ///
    /// The uncontended ADD lists the node's own blocks and writes one of them (or creates a new block
    /// at the node's next free position: a 409 there means another node has it, and the next position
    /// is tried without listing again). After [`PROBES`] such collisions, or when no own block has room
    /// and no position is left to try, the ADD reads the whole space (paged) and plans on all of it:
    /// claim a free position, else borrow (adopting orphans first).
    pub async fn allocate(
        &mut self,
        cfg: &IpamConfig,
        who: &Attachment,
        wanted: &[Option<IpAddr>],
        now: u64,
        before: &mut Option<Vec<IpAddr>>,
    ) -> CniResult<Vec<IpAddr>> {
        self.ensure_indexed().await?;
        let mut attempt = 0;
        let mut full = false;
        let mut avoid: HashSet<u128> = HashSet::new();
        let mut probes = 0;
        'again: loop {
            let mut blocks = self
                .list_retrying(if full { &Query::Space } else { &Query::Own })
                .await?;
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
                loop {
                    let plan = if full {
                        plan_add(&blocks, &self.space, &self.node, range, who, wanted[i], now)?
                    } else {
                        match plan_own(
                            &blocks,
                            &self.space,
                            &self.node,
                            range,
                            who,
                            wanted[i],
                            now,
                            &avoid,
                            probes < PROBES,
                        )? {
                            Some(p) => p,
                            None => match self.scan(range, &avoid).await? {
                                Scan::Free(net) => {
                                    match claim_at(&self.space, &self.node, range, &net, who, now) {
                                        Some(p) => p,
                                        None => {
                                            avoid.insert(net.first());
                                            continue;
                                        }
                                    }
                                }
                                Scan::All(all) => {
                                    blocks = all;
                                    full = true;
                                    continue;
                                }
                            },
                        }
                    };
                    let Some(w) = &plan.write else {
                        got.push(plan.ip);
                        break;
                    };
                    match self.write(w).await {
                        Ok(()) => {
                            got.push(plan.ip);
                            break;
                        }
                        Err(Verdict::Fail(e)) => return Err(e),
                        Err(Verdict::Taken) if !full && wanted[i].is_some() => {
                            // The static address's block exists: fetch it by name and plan on it.
                            let name = w.block().metadata.name.clone().unwrap_or_default();
                            let named = self.list_retrying(&Query::Named(name.clone())).await?;
                            blocks.retain(|b| b.metadata.name.as_deref() != Some(name.as_str()));
                            if named.is_empty() {
                                attempt += 1;
                                self.pause(attempt).await;
                            }
                            blocks.extend(named);
                        }
                        Err(Verdict::Taken) if !full => {
                            if let Some(net) = subnet(w.block()) {
                                avoid.insert(net.first());
                            }
                            probes += 1;
                        }
                        Err(_) => {
                            attempt += 1;
                            self.pause(attempt).await;
                            continue 'again;
                        }
                    }
                }
            }
            return Ok(got);
        }
    }

    /// Reads the space page by page until a page proves a block position of `range` unclaimed (one
    /// not in `avoid`, picked by the node's hash among those the page shows), else returns every block.
    async fn scan(
        &mut self,
        range: &plumb_ipam::range::Range,
        avoid: &HashSet<u128>,
    ) -> CniResult<Scan> {
        let mut attempt = 0;
        'again: loop {
            let mut lp = self.params(&Query::Space);
            let mut all = Vec::new();
            let mut first = true;
            loop {
                let l = match self.api.list(&lp).await {
                    Ok(l) => l,
                    Err(e) => {
                        self.last_error = format!("list ipblocks: {e}");
                        match judge(e, "cannot list IPBlocks") {
                            Verdict::Fail(e) => return Err(e),
                            _ => {
                                attempt += 1;
                                self.pause(attempt).await;
                                continue 'again;
                            }
                        }
                    }
                };
                let next = l.metadata.continue_.filter(|c| !c.is_empty());
                let free = free_in_page(&l.items, first, next.is_none(), &self.space, range, avoid);
                if let Some(net) = pick_for(&self.node, &free) {
                    return Ok(Scan::Free(net));
                }
                all.extend(l.items.into_iter().filter(|b| b.spec.space == self.space));
                first = false;
                match next {
                    Some(c) => lp = lp.continue_token(&c),
                    None => return Ok(Scan::All(all)),
                }
            }
        }
    }

    /// Removes every reservation `drop` selects among the blocks `q` lists, re-planning on conflicts;
    /// returns the freed addresses.
    pub async fn remove(
        &mut self,
        q: Query,
        drop: impl Fn(IpAddr, &super::crd::Allocation) -> bool,
    ) -> CniResult<Vec<IpAddr>> {
        self.ensure_indexed().await?;
        let mut attempt = 0;
        let mut freed_all = Vec::new();
        'again: loop {
            let blocks = self.list_retrying(&q).await?;
            let (writes, freed) = plan_removal(&blocks, &drop);
            for w in &writes {
                match self.write(w).await {
                    Ok(()) => {}
                    Err(Verdict::Fail(e)) => return Err(e),
                    Err(_) => {
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
        self.remove(
            Query::Attachment(container_id.into(), ifname.into()),
            |ip, a| a.is_for(container_id, ifname) && ips.contains(&ip),
        )
        .await
    }

    /// The addresses an attachment holds.
    pub async fn held(&mut self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        self.ensure_indexed().await?;
        let q = Query::Attachment(container_id.into(), ifname.into());
        let blocks = self.list_retrying(&q).await?;
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
