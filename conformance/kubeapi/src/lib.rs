//! A strict, in-process test Kubernetes API server for plumb.
//!
//! There is no real Kubernetes API server in plumb's build and test
//! environment, so this crate provides a small one written from the
//! Kubernetes API conventions: real HTTP/1.1 (keep-alive, `Content-Length`
//! and `Transfer-Encoding: chunked` request bodies, `Connection: close`,
//! `Expect: 100-continue`) with JSON bodies, listening only on `127.0.0.1`,
//! good enough for `kube::Client` (hyper over an `http://` cluster URL) and
//! `kubectl`.
//!
//! # Served resources
//!
//! | resource | scope | paths |
//! | --- | --- | --- |
//! | `IPBlock` (`plumb.dev/v1alpha1`, plural `ipblocks`) | cluster | `/apis/plumb.dev/v1alpha1/ipblocks[/{name}[/status]]` (`/status` only with [`Options::ipblock_status_subresource`]) |
//! | `Pod` (`v1`) | namespaced | `/api/v1/pods` (list across namespaces), `/api/v1/namespaces/{ns}/pods[/{name}[/status]]` |
//! | `Node` (`v1`) | cluster | `/api/v1/nodes[/{name}[/status]]` |
//!
//! Verbs: get, list, create (POST), update (PUT), patch (PATCH with
//! `application/merge-patch+json` or `application/json-patch+json`),
//! delete (optionally with a `DeleteOptions` body carrying
//! `preconditions.uid` / `preconditions.resourceVersion` and `dryRun`),
//! deletecollection, and `?dryRun=All` on writes. Discovery is served at
//! `/api`, `/api/v1`, `/apis`, `/apis/plumb.dev`, `/apis/plumb.dev/v1alpha1`,
//! plus `/version` and `/healthz`, `/livez`, `/readyz`. kube-rs's typed
//! `Api<K>` and `Api<DynamicObject>` (with a known `ApiResource`) never call
//! discovery; `kubectl` does.
//!
//! # Semantics that follow the real API server
//!
//! * Every object gets `metadata.uid` (random UUID), `metadata.creationTimestamp`
//!   (RFC 3339, seconds) and `metadata.resourceVersion`, the decimal string of
//!   ONE global counter that grows on every write (create, update, patch,
//!   delete); lists carry the counter's current value in
//!   `metadata.resourceVersion`. `metadata.generation` starts at 1 for
//!   IPBlocks and Pods and grows when anything outside `metadata` (and outside
//!   `status` when that is a subresource) changes; Nodes have none.
//! * Lists: `{"kind":"<Kind>List","apiVersion":..,"metadata":{"resourceVersion":..},"items":[..]}`,
//!   items in key order (namespace, then name), each with `kind`/`apiVersion`.
//! * Errors are `Status` objects (`kind: Status`, `status: Failure`,
//!   `reason`, `message`, `code`, and `details` with `name`, `group` and the
//!   resource plural as `kind`, like the real server): missing object → 404
//!   `NotFound`; POST of an existing name → 409 `AlreadyExists`; PUT/PATCH
//!   with a `metadata.resourceVersion` other than the stored one → 409
//!   `Conflict`; a different `metadata.uid` or a failed delete precondition →
//!   409 `Conflict` ("Precondition failed: ..."); malformed JSON, wrong
//!   `apiVersion`/`kind`, non-object metadata, non-string labels, a body name
//!   other than the URL's, a body namespace other than the URL's, a bad
//!   selector or an unknown field selector → 400 `BadRequest`; invalid names,
//!   namespaces, label keys/values, annotation keys or finalizers → 422
//!   `Invalid`; a non-JSON `Content-Type` on a body → 415; a wrong method → 405.
//! * PUT without `metadata.resourceVersion` is an unconditional update for
//!   Pods and Nodes, but 422 `Invalid` (`metadata.resourceVersion: Invalid
//!   value: 0x0: must be specified for an update`) for the custom resource,
//!   as custom resources do not allow unconditional updates. PATCH is
//!   unconditional unless the patch sets `metadata.resourceVersion`.
//! * POST with `metadata.resourceVersion` set → 500 ("resourceVersion should
//!   not be set on objects to be created"), as etcd3 storage answers.
//! * `generateName` works; missing name and generateName → 422.
//! * `uid`, `creationTimestamp`, `deletionTimestamp` and `generation` cannot
//!   be changed by clients. A PUT/PATCH that changes nothing does not write
//!   and keeps the resourceVersion.
//! * Pods and Nodes have a status subresource: PUT/PATCH of the main resource
//!   keeps the stored `status`, `/status` changes only `status`. Pod `spec`
//!   may only change in `containers[*].image`, `initContainers[*].image`,
//!   `activeDeadlineSeconds`, `tolerations`, `terminationGracePeriodSeconds`,
//!   `schedulingGates` (otherwise 422); Node `spec.podCIDR(s)` may only go
//!   from empty to set.
//! * Finalizers: DELETE of an object with `metadata.finalizers` sets
//!   `deletionTimestamp` and keeps it; the update that removes the last
//!   finalizer deletes it; adding finalizers while deleting → 422.
//! * Cluster-scoped objects sent with a namespace have it cleared.
//! * Label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
//!   `a notin (x)`, `a>1`, `a<1`, comma-AND. Field selectors: `=`, `==`, `!=`,
//!   comma-AND, on the field labels the real server supports: IPBlock
//!   `metadata.name`, `metadata.namespace`; Pod `metadata.name`,
//!   `metadata.namespace`, `spec.nodeName`, `spec.restartPolicy`,
//!   `spec.schedulerName`, `spec.serviceAccountName`, `spec.hostNetwork`,
//!   `status.phase`, `status.podIP`, `status.nominatedNodeName`; Node
//!   `metadata.name`, `spec.unschedulable`. Others → 400.
//! * `limit`/`continue` paginate (opaque continue token, `remainingItemCount`
//!   when no selector is used).
//! * Bearer tokens: with a token configured ([`Options::token`],
//!   [`TestApiServer::set_token`]) every request, discovery and health
//!   included, needs `Authorization: Bearer <token>`, else 401 `Unauthorized`.
//!
//! # Where it is weaker than, or differs from, a real API server
//!
//! * **No watch.** `watch=true` (or `watch=1`) answers 501 with a `Status`
//!   whose reason is the non-standard `NotImplemented`, so `kube::runtime`
//!   watchers/reflectors/controllers do not work.
//! * **No consistent snapshots for paging**: `continue` resumes after the last
//!   key in the *current* state; it never expires (no 410 Gone), and
//!   `resourceVersion`/`resourceVersionMatch` on get/list are accepted and
//!   ignored (always the latest state).
//! * **No authentication beyond one static bearer token and no authorization
//!   (RBAC), no impersonation, no anonymous user**: a missing token is 401,
//!   as with `--anonymous-auth=false`, not 403. Audit, priority & fairness
//!   do not exist (429s come only from fault injection).
//! * **No admission** (no namespace lifecycle: any namespace name is
//!   accepted and namespaces are not objects; no defaulting, no mutating or
//!   validating webhooks, no ValidatingAdmissionPolicy, no quota).
//! * **No schema validation or pruning**: the IPBlock CRD's OpenAPI schema
//!   is unknown to the server, unknown fields are kept, `fieldValidation` is
//!   ignored; Pod and Node specs are not validated (no required containers,
//!   no defaults such as `restartPolicy`, `dnsPolicy`, QoS class) beyond the
//!   immutability rules above.
//! * **Pod `status` is stored as given on create** (tests create Pending and
//!   Running pods), whereas the real server resets it to `Pending`; Node
//!   status likewise. No kubelet, scheduler, controllers, binding
//!   subresource or node lifecycle.
//! * **No graceful deletion**: Pods are removed at once (no
//!   `deletionGracePeriodSeconds` countdown even when bound to a node);
//!   `gracePeriodSeconds` and `propagationPolicy` are ignored; no garbage
//!   collection of `ownerReferences`. The object returned by DELETE keeps its
//!   last resourceVersion although the delete advances the counter.
//! * **No server-side apply, no strategic merge patch** (415; the real server
//!   supports both for Pods/Nodes and apply for CRs), **no `managedFields` /
//!   field managers** (`fieldManager` is ignored).
//! * **JSON only**: no YAML, protobuf or CBOR bodies (415), `Accept` is
//!   ignored (always JSON, no `Table` output, no aggregated discovery, no
//!   OpenAPI documents at `/openapi/v2` or `/openapi/v3`).
//! * **Only three resources**, one version each: no other core or CRD
//!   resources, no `CustomResourceDefinition` objects, no conversion, no
//!   `/scale`, `/eviction`, `/log`, `/exec`, `/proxy` subresources, no
//!   `selectableFields`.
//! * Validation messages imitate the real ones but are not byte-identical;
//!   only the checks listed above exist (e.g. no length limit on
//!   annotations' total size, no 1.5 MiB etcd object limit; bodies over
//!   3 MiB get 413).
//! * Finalizer names are only checked to be qualified names (no warnings);
//!   `generation` is approximate for Pods.
//! * `dryRun=All` runs the checks and stores nothing; a dry-run create
//!   returns the object without a resourceVersion. deletecollection refuses
//!   preconditions (400) and honours `limit`.
//! * HTTP/1.1 only (no HTTP/2, no TLS, no WebSockets/SPDY upgrades); idle
//!   keep-alive connections are closed after [`Options::idle_timeout`].
//! * A few answers follow the API server's source as understood, not a
//!   side-by-side run against a live cluster (none is available here): the
//!   500 on create with a resourceVersion, the 422 on a custom-resource PUT
//!   without one, clearing the namespace of cluster-scoped objects, DELETE
//!   returning the object with 200.
//!
//! # kubectl
//!
//! `kubectl` (client-go) works against it for get/list/create/label/patch/
//! delete/api-resources, with two caveats: client-go never sends a bearer
//! token over plain `http://`, so start the server without a token for
//! kubectl; and there is no OpenAPI document, so `kubectl create` needs
//! `--validate=false` and `kubectl apply`/`edit` (strategic merge or
//! server-side apply) do not work.
//!
//! # Fault injection and observation
//!
//! [`TestApiServer::set_faults`] installs a fixed per-request latency and
//! rules that make a seeded share of matching requests fail with 429 (with
//! `Retry-After: 1`), 500, 409 (writes only), a dropped connection before
//! the request is processed, or a dropped connection after it has been
//! processed (the write happened but the client never hears of it).
//! [`TestApiServer::counts`] counts requests per resource and verb;
//! [`TestApiServer::requests`] keeps the last [`Options::log_capacity`]
//! requests.
//!
//! ```no_run
//! use plumb_kubeapi::{FaultKind, FaultRule, Faults, Options, Resource, TestApiServer, Verb};
//! let server = TestApiServer::start(Options::default()).unwrap();
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"), None).unwrap();
//! server.set_faults(Faults {
//!     seed: 42,
//!     rules: vec![FaultRule::new(FaultKind::TooManyRequests, 0.1).verbs(&[Verb::Create])],
//!     ..Faults::default()
//! });
//! assert_eq!(server.counts().get(Resource::IpBlocks, Verb::Create), 0);
//! ```

#![warn(missing_docs)]

mod api;
mod http;
mod patch;
mod select;
mod util;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// A resource served by the test API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `ipblocks.plumb.dev/v1alpha1`, kind `IPBlock`, cluster-scoped.
    IpBlocks,
    /// Core `v1` `pods`, namespaced.
    Pods,
    /// Core `v1` `nodes`, cluster-scoped.
    Nodes,
}

impl Resource {
    /// All served resources.
    pub const ALL: [Resource; 3] = [Resource::IpBlocks, Resource::Pods, Resource::Nodes];

    /// The kind, e.g. `IPBlock`.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::IpBlocks => "IPBlock",
            Resource::Pods => "Pod",
            Resource::Nodes => "Node",
        }
    }

    /// The list kind, e.g. `IPBlockList`.
    pub fn list_kind(self) -> &'static str {
        match self {
            Resource::IpBlocks => "IPBlockList",
            Resource::Pods => "PodList",
            Resource::Nodes => "NodeList",
        }
    }

    /// The plural resource name used in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::IpBlocks => "ipblocks",
            Resource::Pods => "pods",
            Resource::Nodes => "nodes",
        }
    }

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Resource::IpBlocks => "plumb.dev",
            Resource::Pods | Resource::Nodes => "",
        }
    }

    /// The `apiVersion` of objects, e.g. `plumb.dev/v1alpha1` or `v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::IpBlocks => "plumb.dev/v1alpha1",
            Resource::Pods | Resource::Nodes => "v1",
        }
    }

    /// Whether objects live in namespaces.
    pub fn namespaced(self) -> bool {
        matches!(self, Resource::Pods)
    }

    /// Whether the server maintains `metadata.generation`.
    pub fn has_generation(self) -> bool {
        matches!(self, Resource::IpBlocks | Resource::Pods)
    }
}

/// The API verb a request was classified as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET of one object (or its status).
    Get,
    /// GET of a collection.
    List,
    /// GET with `watch=true` (always rejected).
    Watch,
    /// POST to a collection.
    Create,
    /// PUT of one object (or its status).
    Update,
    /// PATCH of one object (or its status).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// 429 `TooManyRequests` with `Retry-After: 1` and a `Status` body.
    TooManyRequests,
    /// 500 `InternalError` `Status`.
    InternalError,
    /// 409 `Conflict` `Status` (applies to writes only).
    Conflict,
    /// Close the connection without a response, before processing.
    DropConnection,
    /// Process the request (writes happen), then close the connection
    /// without sending the response.
    DropResponse,
}

/// One fault-injection rule.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// What to do.
    pub kind: FaultKind,
    /// Share of matching requests to hit, `0.0..=1.0`.
    pub share: f64,
    /// Verbs the rule applies to; empty means all.
    pub verbs: Vec<Verb>,
    /// Resources the rule applies to; empty means all.
    pub resources: Vec<Resource>,
    /// Stop after this many hits (`None`: unlimited).
    pub max_hits: Option<u64>,
}

impl FaultRule {
    /// A rule hitting `share` of all requests (all verbs and resources).
    pub fn new(kind: FaultKind, share: f64) -> Self {
        FaultRule {
            kind,
            share,
            verbs: Vec::new(),
            resources: Vec::new(),
            max_hits: None,
        }
    }

    /// Restrict to these verbs.
    pub fn verbs(mut self, verbs: &[Verb]) -> Self {
        self.verbs = verbs.to_vec();
        self
    }

    /// Restrict to these resources.
    pub fn resources(mut self, resources: &[Resource]) -> Self {
        self.resources = resources.to_vec();
        self
    }

    /// Fire at most `n` times.
    pub fn max_hits(mut self, n: u64) -> Self {
        self.max_hits = Some(n);
        self
    }

    /// Whether the rule may hit a request of this resource and verb.
    pub fn applies_to(&self, res: Resource, verb: Verb) -> bool {
        (self.verbs.is_empty() || self.verbs.contains(&verb))
            && (self.resources.is_empty() || self.resources.contains(&res))
            && (self.kind != FaultKind::Conflict || verb.is_write())
    }
}

/// Fault-injection settings. Requests to API resources draw one number from a
/// xorshift generator seeded with `seed`; the matching rules' shares are
/// stacked in order, so with the same request sequence the same requests
/// fail. Discovery and health requests only get the latency.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Delay added to every request before it is handled.
    pub latency: Duration,
    /// Rules, tried in order.
    pub rules: Vec<FaultRule>,
    /// RNG seed (0 is replaced by a fixed constant).
    pub seed: u64,
}

/// Request counters per resource and verb. Every request that targets a
/// resource is counted once it is read, whatever its outcome (including
/// 401s and injected faults); `/status` requests count under the verb.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Count per (resource, verb).
    pub by: BTreeMap<(Resource, Verb), u64>,
    /// Requests that targeted no resource (discovery, health, unknown paths,
    /// unsupported methods).
    pub other: u64,
    /// Faults injected (any kind).
    pub faults_injected: u64,
    /// Requests refused with 401.
    pub unauthorized: u64,
    /// Bytes of the response bodies sent (every request; dropped responses count 0).
    pub response_bytes: u64,
}

impl Counts {
    /// Requests for `res` with `verb`.
    pub fn get(&self, res: Resource, verb: Verb) -> u64 {
        self.by.get(&(res, verb)).copied().unwrap_or(0)
    }

    /// Requests with `verb`, all resources.
    pub fn verb(&self, verb: Verb) -> u64 {
        self.by
            .iter()
            .filter(|((_, v), _)| *v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests for `res`, all verbs.
    pub fn resource(&self, res: Resource) -> u64 {
        self.by
            .iter()
            .filter(|((r, _), _)| *r == res)
            .map(|(_, n)| n)
            .sum()
    }

    /// All resource requests.
    pub fn total(&self) -> u64 {
        self.by.values().sum()
    }
}

/// One entry of the request log.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRequest {
    /// Sequence number of the request since the server started (1, 2, ...),
    /// not reset by [`TestApiServer::clear_requests`].
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Raw path.
    pub path: String,
    /// Raw query string (without `?`).
    pub query: String,
    /// Response status; 0 when the connection was dropped.
    pub status: u16,
    /// Resource and verb, if the request targeted a resource.
    pub target: Option<(Resource, Verb)>,
    /// The injected fault, if any.
    pub fault: Option<FaultKind>,
    /// Bytes of the response body (0 when the connection was dropped).
    pub response_bytes: u64,
}

/// Server options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// How many requests [`TestApiServer::requests`] keeps.
    pub log_capacity: usize,
    /// Initial faults.
    pub faults: Faults,
    /// Serve `ipblocks/status` as a status subresource (then PUT/PATCH of the
    /// main resource keep `status`), as a CRD with `subresources.status`.
    pub ipblock_status_subresource: bool,
    /// Close keep-alive connections idle this long.
    pub idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            token: None,
            log_capacity: 1000,
            faults: Faults::default(),
            ipblock_status_subresource: false,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A clone of an open connection's socket and its serving thread.
type Connection = (TcpStream, JoinHandle<()>);

struct Shared {
    state: Mutex<api::State>,
    stopping: AtomicBool,
    /// Open connections: a clone of the socket (to shut it down on stop)
    /// and the serving thread.
    conns: Mutex<HashMap<u64, Connection>>,
    next_conn: AtomicU64,
    idle_timeout: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, api::State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running test API server. Stops on [`TestApiServer::stop`] or drop.
pub struct TestApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TestApiServer {
    /// Bind `127.0.0.1:port` and serve in background threads.
    pub fn start(opts: Options) -> io::Result<TestApiServer> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port))?;
        let addr = listener.local_addr()?;
        let mut state = api::State::new(
            addr.port(),
            opts.token.clone(),
            opts.log_capacity,
            opts.ipblock_status_subresource,
        );
        state.set_faults(opts.faults.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            idle_timeout: opts.idle_timeout,
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("kubeapi-accept".into())
            .spawn(move || accept_loop(listener, sh))?;
        Ok(TestApiServer {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The socket address (always on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (as JSON, which is valid YAML) pointing at the server,
    /// with a bearer token if given; context and cluster are named
    /// `plumb-test`, the default namespace is `default`.
    pub fn kubeconfig(&self, token: Option<&str>) -> Value {
        let user = match token {
            Some(t) => json!({"token": t}),
            None => json!({}),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "plumb-test", "cluster": {"server": self.url()}}],
            "users": [{"name": "plumb-test", "user": user}],
            "contexts": [{"name": "plumb-test", "context": {"cluster": "plumb-test", "user": "plumb-test", "namespace": "default"}}],
            "current-context": "plumb-test",
            "preferences": {}
        })
    }

    /// [`TestApiServer::kubeconfig`] with [`TEST_CA_PEM`] as the cluster's CA.
    pub fn kubeconfig_with_test_ca(&self, token: Option<&str>) -> Value {
        let mut kc = self.kubeconfig(token);
        kc["clusters"][0]["cluster"]["certificate-authority-data"] = json!(base64(TEST_CA_PEM));
        kc
    }

    /// Write [`TestApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: Option<&str>) -> io::Result<()> {
        let text = serde_json::to_string_pretty(&self.kubeconfig(token))?;
        std::fs::write(path, text + "\n")
    }

    /// Change (or remove) the required bearer token.
    pub fn set_token(&self, token: Option<&str>) {
        self.shared.lock().token = token.map(str::to_string);
    }

    /// Replace the fault settings (resets the fault RNG and hit counts).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().set_faults(faults);
    }

    /// Remove all faults and latency.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// A snapshot of the request counters.
    pub fn counts(&self) -> Counts {
        self.shared.lock().counts.clone()
    }

    /// Zero the request counters.
    pub fn reset_counts(&self) {
        self.shared.lock().counts = Counts::default();
    }

    /// The last requests, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.iter().cloned().collect()
    }

    /// Empty the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// The current value of the global resourceVersion counter.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// A snapshot of all stored objects of `res`, in list order.
    pub fn objects(&self, res: Resource) -> Vec<Value> {
        api::all_direct(&self.shared.lock(), res)
    }

    /// One stored object (`namespace` is ignored for cluster-scoped ones).
    pub fn object(&self, res: Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        let ns = if res.namespaced() { namespace } else { None };
        api::get_direct(&self.shared.lock(), res, ns, name)
    }

    /// Create or replace an object directly, bypassing HTTP, counters,
    /// faults, preconditions and immutability rules (for test setup, e.g.
    /// Nodes and Running Pods). `kind`/`apiVersion` are filled in when
    /// missing and must match `res` otherwise; names and labels are
    /// validated; Pods need `metadata.namespace`. `uid` and
    /// `creationTimestamp` are kept from the body, else from the replaced
    /// object, else generated; a new resourceVersion is always assigned.
    /// Returns the stored object.
    pub fn put_object(&self, res: Resource, obj: Value) -> Result<Value, String> {
        api::put_direct(&mut self.shared.lock(), res, obj)
    }

    /// Remove an object directly (finalizers ignored); returns it if it
    /// existed. `namespace` is ignored for cluster-scoped resources.
    pub fn delete_object(
        &self,
        res: Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let ns = if res.namespaced() { namespace } else { None };
        api::delete_direct(&mut self.shared.lock(), res, ns, name)
    }

    /// Stop listening, close every connection and join the threads.
    /// Idempotent; also done on drop.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        let conns: Vec<_> = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        let sh = shared.clone();
        // Hold the lock while spawning so the thread's own removal of its
        // entry (when it ends) cannot run before the entry exists.
        let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        let handle = std::thread::Builder::new()
            .name(format!("kubeapi-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, &sh);
                sh.conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        if let Ok(h) = handle {
            conns.insert(id, (registered, h));
        }
    }
}

enum Outcome {
    Respond(http::Response),
    Drop,
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(shared.idle_timeout));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let req = match http::read_request(&mut reader, &mut writer) {
            Ok(r) => r,
            Err(http::ReadError::Closed) | Err(http::ReadError::Io) => break,
            Err(http::ReadError::Bad(msg)) => {
                let resp = api::ApiError::bad_request(msg).response();
                let _ = http::write_response(&mut writer, &resp, true, false);
                break;
            }
            Err(http::ReadError::TooLarge) => {
                let resp = http::Response::json(
                    413,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("the request body exceeds {} bytes", http::MAX_BODY_BYTES),
                            "reason": "RequestEntityTooLarge", "code": 413}),
                );
                let _ = http::write_response(&mut writer, &resp, true, false);
                break;
            }
        };
        let close = req.wants_close();
        match handle_request(shared, &req) {
            Outcome::Drop => {
                let _ = writer.shutdown(Shutdown::Both);
                break;
            }
            Outcome::Respond(resp) => {
                let head = req.method == "HEAD";
                if http::write_response(&mut writer, &resp, close, head).is_err() || close {
                    break;
                }
            }
        }
    }
    // The accept loop keeps a clone of the socket (to shut it down on
    // stop), so dropping ours would not close it: end it explicitly.
    let _ = writer.shutdown(Shutdown::Write);
}

fn bearer_ok(req: &http::Request, token: &Option<String>) -> bool {
    let Some(want) = token else { return true };
    let Some(h) = req.header("authorization") else {
        return false;
    };
    match h.split_once(' ') {
        Some((scheme, t)) => scheme.eq_ignore_ascii_case("bearer") && t.trim() == want,
        None => false,
    }
}

fn handle_request(shared: &Shared, req: &http::Request) -> Outcome {
    let route = api::route(&req.path);
    let target = route
        .as_ref()
        .ok()
        .and_then(|r| api::classify(&req.method, r, &req.query));
    // Count, authenticate and pick a fault under one lock; sleep outside.
    let (latency, authorized, fault) = {
        let mut st = shared.lock();
        match target {
            Some(t) => *st.counts.by.entry(t).or_insert(0) += 1,
            None => st.counts.other += 1,
        }
        let authorized = bearer_ok(req, &st.token);
        let fault = match (authorized, target) {
            (true, Some((res, verb))) => st.pick_fault(res, verb),
            _ => None,
        };
        if !authorized {
            st.counts.unauthorized += 1;
        }
        if fault.is_some() {
            st.counts.faults_injected += 1;
        }
        (st.faults.latency, authorized, fault)
    };
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let outcome = if !authorized {
        Outcome::Respond(api::ApiError::unauthorized().response())
    } else {
        match fault {
            Some(FaultKind::TooManyRequests) => {
                Outcome::Respond(api::ApiError::too_many_requests().response())
            }
            Some(FaultKind::InternalError) => Outcome::Respond(
                api::ApiError::internal("injected fault: etcdserver: request timed out").response(),
            ),
            Some(FaultKind::Conflict) => {
                let (res, name) = match &route {
                    Ok(api::Route::Item { res, name, .. }) => (*res, name.clone()),
                    // A create: name the object from the body when possible.
                    Ok(api::Route::Collection { res, .. }) => (
                        *res,
                        serde_json::from_slice::<Value>(&req.body)
                            .ok()
                            .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
                            .unwrap_or_default(),
                    ),
                    _ => unreachable!("faults only hit resource requests"),
                };
                Outcome::Respond(api::ApiError::stale(res, &name).response())
            }
            Some(FaultKind::DropConnection) => Outcome::Drop,
            Some(FaultKind::DropResponse) => {
                let _ = process(shared, req, &route);
                Outcome::Drop
            }
            None => Outcome::Respond(process(shared, req, &route)),
        }
    };
    let (status, response_bytes) = match &outcome {
        Outcome::Respond(r) => (r.status, r.body.len() as u64),
        Outcome::Drop => (0, 0),
    };
    let mut st = shared.lock();
    st.counts.response_bytes += response_bytes;
    st.log_seq += 1;
    let seq = st.log_seq;
    st.log_request(LoggedRequest {
        seq,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        status,
        target,
        fault,
        response_bytes,
    });
    outcome
}

fn process(
    shared: &Shared,
    req: &http::Request,
    route: &Result<api::Route, api::ApiError>,
) -> http::Response {
    match route {
        Err(e) => e.response(),
        Ok(api::Route::Health) => http::Response::text(200, "ok"),
        Ok(r) => match api::dispatch(&mut shared.lock(), req, r) {
            Ok((code, v)) => http::Response::json(code, &v),
            Err(e) => e.response(),
        },
    }
}

/// A self-signed CA certificate made for plumb's tests, for kubeconfigs' `certificate-authority-data`
/// the way real kubeconfigs (and in-cluster config) carry the cluster's CA. With one, kube-rs builds its
/// TLS settings from it alone; without one it loads the host's whole trust store for every client (one
/// per CNI call), which in a debug build costs more CPU than an ADD. The server speaks plain HTTP, so the
/// certificate never verifies anything.
pub const TEST_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBhzCCAS2gAwIBAgIUZbO6YN/qfmGfR6WDyriuZ2Fd/8AwCgYIKoZIzj0EAwIw\n\
GDEWMBQGA1UEAwwNcGx1bWItdGVzdC1jYTAgFw0yNjExMjIwMzA2NTVaGA8yMTI2\n\
MTAyOTAzMDY1NVowGDEWMBQGA1UEAwwNcGx1bWItdGVzdC1jYTBZMBMGByqGSM49\n\
AgEGCCqGSM49AwEHA0IABKZO3tbir5Pn2JttayXJ3a0ZSy6lrMt6iUtQTwlLUrft\n\
brauPvwcn30hq1QG98Oc6unPoC6oCZ/3AD2c+7j0ecGjUzBRMB0GA1UdDgQWBBSi\n\
6p/kNzRogHk6IA+55ZRfz975czAfBgNVHSMEGDAWgBSi6p/kNzRogHk6IA+55ZRf\n\
z975czAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCvbOeujuez\n\
ZHSMZqrsYyzlOJZ6y7is5zae4P9t1tNNKAIgIkgyEdNrer3I3j+j3QnFbR+mBykv\n\
FvT2q5qUd4qxKDw=\n\
-----END CERTIFICATE-----\n\
";

/// Standard base64 with padding.
pub(crate) fn base64(data: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod base64_tests {
    #[test]
    fn base64_is_standard() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ];
        for (plain, encoded) in cases {
            assert_eq!(super::base64(plain), encoded);
        }
    }
}
