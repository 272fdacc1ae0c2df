//! Routing, the object store and the Kubernetes API semantics.

use crate::http::{Request, Response};
use crate::select::{labels_of, FieldSelector, LabelSelector};
use crate::util::{
    hex_decode, hex_encode, is_dns1123_label, is_dns1123_subdomain, is_label_value,
    is_qualified_name, now_rfc3339, parse_query, percent_decode, XorShift,
};
use crate::{Counts, FaultKind, Faults, LoggedRequest, Resource, Verb};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};

/// Object key: (namespace or "", name).
pub(crate) type Key = (String, String);

/// Everything behind the server's one lock.
pub(crate) struct State {
    pub rv: u64,
    pub store: BTreeMap<Resource, BTreeMap<Key, Value>>,
    pub token: Option<String>,
    pub faults: Faults,
    pub fault_rng: XorShift,
    pub fault_hits: Vec<u64>,
    pub counts: Counts,
    pub log: VecDeque<LoggedRequest>,
    pub log_capacity: usize,
    pub log_seq: u64,
    pub rng: XorShift,
    pub ipblock_status_subresource: bool,
    pub port: u16,
}

impl State {
    pub(crate) fn new(
        port: u16,
        token: Option<String>,
        log_capacity: usize,
        ipblock_status: bool,
    ) -> Self {
        let mut store = BTreeMap::new();
        for r in Resource::ALL {
            store.insert(r, BTreeMap::new());
        }
        State {
            rv: 0,
            store,
            token,
            faults: Faults::default(),
            fault_rng: XorShift::new(0),
            fault_hits: Vec::new(),
            counts: Counts::default(),
            log: VecDeque::new(),
            log_capacity,
            log_seq: 0,
            rng: XorShift::from_clock(),
            ipblock_status_subresource: ipblock_status,
            port,
        }
    }

    /// Advance the global resourceVersion counter.
    pub(crate) fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn objects(&self, res: Resource) -> &BTreeMap<Key, Value> {
        &self.store[&res]
    }

    fn objects_mut(&mut self, res: Resource) -> &mut BTreeMap<Key, Value> {
        self.store.get_mut(&res).expect("all resources have a map")
    }

    fn has_status_subresource(&self, res: Resource) -> bool {
        match res {
            Resource::Pods | Resource::Nodes => true,
            Resource::IpBlocks => self.ipblock_status_subresource,
        }
    }

    /// Install the faults and reset the fault RNG from their seed.
    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.fault_rng = XorShift::new(faults.seed);
        self.fault_hits = vec![0; faults.rules.len()];
        self.faults = faults;
    }

    /// Decide whether to inject a fault into this request.
    pub(crate) fn pick_fault(&mut self, res: Resource, verb: Verb) -> Option<FaultKind> {
        if self.faults.rules.is_empty() {
            return None;
        }
        let draw = self.fault_rng.next_f64();
        let mut acc = 0.0;
        for (i, rule) in self.faults.rules.iter().enumerate() {
            if !rule.applies_to(res, verb) || rule.max_hits.is_some_and(|m| self.fault_hits[i] >= m)
            {
                continue;
            }
            acc += rule.share.clamp(0.0, 1.0);
            if draw < acc {
                self.fault_hits[i] += 1;
                return Some(rule.kind);
            }
        }
        None
    }

    /// Append to the bounded request log.
    pub(crate) fn log_request(&mut self, entry: LoggedRequest) {
        if self.log_capacity == 0 {
            return;
        }
        while self.log.len() >= self.log_capacity {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }
}

// ---------------------------------------------------------------- errors

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn qualified(res: Resource) -> String {
    if res.group().is_empty() {
        res.plural().to_string()
    } else {
        format!("{}.{}", res.plural(), res.group())
    }
}

fn resource_details(res: Resource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural()});
    if !res.group().is_empty() {
        d["group"] = json!(res.group());
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn not_found(res: Resource, name: &str) -> Self {
        ApiError {
            details: Some(resource_details(res, name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualified(res)),
            )
        }
    }

    pub(crate) fn page_not_found() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    fn already_exists(res: Resource, name: &str) -> Self {
        ApiError {
            details: Some(resource_details(res, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(res)),
            )
        }
    }

    pub(crate) fn conflict(res: Resource, name: &str, why: &str) -> Self {
        ApiError {
            details: Some(resource_details(res, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    qualified(res)
                ),
            )
        }
    }

    pub(crate) fn stale(res: Resource, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    fn invalid(res: Resource, name: &str, field: &str, cause_reason: &str, msg: &str) -> Self {
        let kind = if res.group().is_empty() {
            res.kind().to_string()
        } else {
            format!("{}.{}", res.kind(), res.group())
        };
        let mut details = json!({
            "name": name,
            "kind": res.kind(),
            "causes": [{"reason": cause_reason, "message": msg, "field": field}]
        });
        if !res.group().is_empty() {
            details["group"] = json!(res.group());
        }
        ApiError {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {field}: {msg}"),
            )
        }
    }

    pub(crate) fn internal(msg: &str) -> Self {
        ApiError {
            details: Some(json!({"causes": [{"message": msg}]})),
            ..Self::new(
                500,
                "InternalError",
                format!("Internal error occurred: {msg}"),
            )
        }
    }

    fn unsupported_media(got: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({got:?}) - accepted media types include: application/json"),
        )
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn too_many_requests() -> Self {
        ApiError {
            details: Some(json!({"retryAfterSeconds": 1})),
            ..Self::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
        }
    }

    /// The `Status` object.
    pub(crate) fn status_value(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// The HTTP response carrying the `Status` object.
    pub(crate) fn response(&self) -> Response {
        let mut r = Response::json(self.code, &self.status_value());
        if self.code == 429 {
            r.headers.push(("Retry-After".into(), "1".into()));
        }
        r
    }
}

// ---------------------------------------------------------------- routing

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Health,
    Version,
    CoreVersions,
    CoreResources,
    Groups,
    PlumbGroup,
    PlumbResources,
    /// A collection; `ns` is `None` for cluster-scoped resources and for the
    /// all-namespaces path of namespaced ones.
    Collection {
        res: Resource,
        ns: Option<String>,
    },
    /// One object, or its `/status` subresource.
    Item {
        res: Resource,
        ns: Option<String>,
        name: String,
        status: bool,
    },
    NotFound,
}

/// Map a raw path to a route.
pub(crate) fn route(raw_path: &str) -> Result<Route, ApiError> {
    let segs: Vec<String> = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect::<Result<_, _>>()
        .map_err(ApiError::bad_request)?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let rest: &[&str] = match s.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => return Ok(Route::Health),
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["api", "v1"] => return Ok(Route::CoreResources),
        ["apis"] => return Ok(Route::Groups),
        ["apis", "plumb.dev"] => return Ok(Route::PlumbGroup),
        ["apis", "plumb.dev", "v1alpha1"] => return Ok(Route::PlumbResources),
        ["api", "v1", rest @ ..] => rest,
        ["apis", "plumb.dev", "v1alpha1", rest @ ..] => rest,
        _ => return Ok(Route::NotFound),
    };
    let group = if s[0] == "api" { "" } else { "plumb.dev" };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let res = match Resource::ALL
        .into_iter()
        .find(|r| r.group() == group && r.plural() == rest[0])
    {
        Some(r) => r,
        None => return Ok(Route::NotFound),
    };
    if ns.is_some() && !res.namespaced() {
        return Ok(Route::NotFound);
    }
    match rest[1..] {
        [] => Ok(Route::Collection { res, ns }),
        [name] | [name, "status"] if res.namespaced() == ns.is_some() => Ok(Route::Item {
            res,
            ns,
            name: name.to_string(),
            status: rest.len() == 3,
        }),
        _ => Ok(Route::NotFound),
    }
}

fn is_watch(q: &[(String, String)]) -> bool {
    q.iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1" || v.is_empty()))
}

/// The (resource, verb) a request counts as, if it targets a resource.
pub(crate) fn classify(method: &str, route: &Route, query: &str) -> Option<(Resource, Verb)> {
    let q = parse_query(query).unwrap_or_default();
    match route {
        Route::Collection { res, .. } => match method {
            "GET" if is_watch(&q) => Some((*res, Verb::Watch)),
            "GET" => Some((*res, Verb::List)),
            "POST" => Some((*res, Verb::Create)),
            "DELETE" => Some((*res, Verb::DeleteCollection)),
            _ => None,
        },
        Route::Item { res, .. } => match method {
            "GET" if is_watch(&q) => Some((*res, Verb::Watch)),
            "GET" => Some((*res, Verb::Get)),
            "PUT" => Some((*res, Verb::Update)),
            "PATCH" => Some((*res, Verb::Patch)),
            "DELETE" => Some((*res, Verb::Delete)),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------- discovery

fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update"
    ])
}

fn api_resource(res: Resource, status: bool) -> Value {
    if status {
        json!({"name": format!("{}/status", res.plural()), "singularName": "", "namespaced": res.namespaced(),
               "kind": res.kind(), "verbs": ["get", "patch", "update"]})
    } else {
        json!({"name": res.plural(), "singularName": res.kind().to_ascii_lowercase(),
               "namespaced": res.namespaced(), "kind": res.kind(), "verbs": verbs()})
    }
}

fn discovery(st: &State, route: &Route) -> Value {
    let plumb_gv = json!({"groupVersion": "plumb.dev/v1alpha1", "version": "v1alpha1"});
    let plumb_group =
        json!({"name": "plumb.dev", "versions": [plumb_gv], "preferredVersion": plumb_gv});
    match route {
        Route::Version => json!({
            "major": "1", "minor": "36", "gitVersion": "v1.36.0-plumb-test-apiserver",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "none", "compiler": "rustc",
            "platform": "linux/amd64"
        }),
        Route::CoreVersions => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", st.port)}]
        }),
        Route::CoreResources => json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": [
                api_resource(Resource::Nodes, false), api_resource(Resource::Nodes, true),
                api_resource(Resource::Pods, false), api_resource(Resource::Pods, true),
            ]
        }),
        Route::Groups => {
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [plumb_group]})
        }
        Route::PlumbGroup => {
            let mut g = plumb_group;
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }
        Route::PlumbResources => {
            let mut resources = vec![api_resource(Resource::IpBlocks, false)];
            if st.ipblock_status_subresource {
                resources.push(api_resource(Resource::IpBlocks, true));
            }
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "plumb.dev/v1alpha1",
                   "resources": resources})
        }
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------- dispatch

/// Handle an authenticated request against the store.
pub(crate) fn dispatch(
    st: &mut State,
    req: &Request,
    route: &Route,
) -> Result<(u16, Value), ApiError> {
    let q = parse_query(&req.query).map_err(ApiError::bad_request)?;
    let m = req.method.as_str();
    match route {
        Route::NotFound => Err(ApiError::page_not_found()),
        Route::Health => unreachable!("answered before dispatch"),
        Route::Version
        | Route::CoreVersions
        | Route::CoreResources
        | Route::Groups
        | Route::PlumbGroup
        | Route::PlumbResources => match m {
            "GET" | "HEAD" => Ok((200, discovery(st, route))),
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::Collection { res, ns } => {
            let res = *res;
            match m {
                "GET" | "HEAD" if is_watch(&q) => Err(ApiError::new(
                    501,
                    "NotImplemented",
                    "watch is not implemented by the plumb test API server",
                )),
                "GET" | "HEAD" => list(st, res, ns.as_deref(), &q),
                "POST" if res.namespaced() && ns.is_none() => Err(ApiError::method_not_allowed()),
                "POST" => create(st, res, ns.as_deref(), req, &q),
                "DELETE" => delete_collection(st, res, ns.as_deref(), req, &q),
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        Route::Item {
            res,
            ns,
            name,
            status,
        } => {
            let res = *res;
            if *status && !st.has_status_subresource(res) {
                return Err(ApiError::page_not_found());
            }
            let key = (ns.clone().unwrap_or_default(), name.clone());
            match m {
                "GET" | "HEAD" if is_watch(&q) => Err(ApiError::new(
                    501,
                    "NotImplemented",
                    "watch is not implemented by the plumb test API server",
                )),
                "GET" | "HEAD" => st
                    .objects(res)
                    .get(&key)
                    .cloned()
                    .map(|o| (200, o))
                    .ok_or_else(|| ApiError::not_found(res, name)),
                "PUT" => update(st, res, &key, req, &q, *status),
                "PATCH" => patch(st, res, &key, req, &q, *status),
                "DELETE" if !*status => delete(st, res, &key, req, &q),
                _ => Err(ApiError::method_not_allowed()),
            }
        }
    }
}

fn query<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn dry_run(q: &[(String, String)]) -> Result<bool, ApiError> {
    let mut dry = false;
    for (k, v) in q {
        if k == "dryRun" {
            if v != "All" {
                return Err(ApiError::bad_request(format!(
                    "Invalid dryRun value {v:?}: only \"All\" is supported"
                )));
            }
            dry = true;
        }
    }
    Ok(dry)
}

fn media_type(req: &Request) -> String {
    req.header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

// ---------------------------------------------------------------- object shape

fn meta(obj: &Map<String, Value>) -> &Map<String, Value> {
    obj.get("metadata")
        .and_then(Value::as_object)
        .expect("shape checked")
}

fn meta_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("shape checked")
}

fn meta_str<'a>(obj: &'a Map<String, Value>, field: &str) -> &'a str {
    meta(obj).get(field).and_then(Value::as_str).unwrap_or("")
}

fn set_meta(obj: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    let m = meta_mut(obj);
    match value {
        Some(v) => {
            m.insert(field.to_string(), v);
        }
        None => {
            m.remove(field);
        }
    }
}

/// Check the decodable shape of an object (what a typed Go decoder would
/// reject with 400) and default apiVersion/kind.
fn check_shape(res: Resource, obj: &mut Map<String, Value>) -> Result<(), ApiError> {
    for (field, want) in [("apiVersion", res.api_version()), ("kind", res.kind())] {
        match obj.get(field) {
            None | Some(Value::Null) => {
                obj.insert(field.to_string(), json!(want));
            }
            Some(Value::String(s)) if s.is_empty() => {
                obj.insert(field.to_string(), json!(want));
            }
            Some(Value::String(s)) if s == want => {}
            Some(other) => {
                let what = if field == "kind" {
                    "kind"
                } else {
                    "API version"
                };
                return Err(ApiError::bad_request(format!(
                    "the {what} in the data ({}) does not match the expected {what} ({want})",
                    other
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| other.to_string())
                )));
            }
        }
    }
    match obj.get("metadata") {
        None | Some(Value::Null) => {
            obj.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
    }
    let m = meta_mut(obj);
    m.retain(|_, v| !v.is_null());
    for f in [
        "name",
        "generateName",
        "namespace",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        if m.get(f).is_some_and(|v| !v.is_string()) {
            return Err(ApiError::bad_request(format!(
                "metadata.{f} must be a string"
            )));
        }
    }
    for f in ["labels", "annotations"] {
        match m.get(f) {
            None => {}
            Some(Value::Object(map)) if map.values().all(Value::is_string) => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "metadata.{f} must be a JSON object of strings"
                )))
            }
        }
    }
    match m.get("finalizers") {
        None => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "metadata.finalizers must be an array of strings",
            ))
        }
    }
    if obj.get("status").is_some_and(Value::is_null) {
        obj.remove("status");
    }
    Ok(())
}

/// Parse and shape-check a JSON request body.
fn decode_body(res: Resource, req: &Request) -> Result<Map<String, Value>, ApiError> {
    let mt = media_type(req);
    if mt != "application/json" {
        return Err(ApiError::unsupported_media(&mt));
    }
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    let mut obj = match v {
        Value::Object(o) => o,
        _ => {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ))
        }
    };
    check_shape(res, &mut obj)?;
    Ok(obj)
}

/// Bring the object's namespace in line with the request's, as the real
/// server does: fill it in when empty, clear it for cluster-scoped
/// resources, reject a different one.
fn fix_namespace(
    res: Resource,
    obj: &mut Map<String, Value>,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let have = meta_str(obj, "namespace").to_string();
    match ns {
        _ if !res.namespaced() => set_meta(obj, "namespace", None),
        Some(ns) if have.is_empty() => set_meta(obj, "namespace", Some(json!(ns))),
        Some(ns) if have == ns => {}
        _ => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
    Ok(())
}

/// Field validation (422 Invalid).
fn validate(res: Resource, obj: &Map<String, Value>) -> Result<(), ApiError> {
    let name = meta_str(obj, "name");
    let inv = |field: &str, reason: &str, msg: String| {
        Err(ApiError::invalid(res, name, field, reason, &msg))
    };
    if !is_dns1123_subdomain(name) {
        return inv(
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        );
    }
    if res.namespaced() {
        let ns = meta_str(obj, "namespace");
        if !is_dns1123_label(ns) {
            return inv(
                "metadata.namespace",
                "FieldValueInvalid",
                format!("Invalid value: {ns:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"),
            );
        }
    }
    let m = meta(obj);
    if let Some(labels) = m.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                return inv("metadata.labels", "FieldValueInvalid", format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"));
            }
            let v = v.as_str().unwrap_or("");
            if !is_label_value(v) {
                return inv(
                    "metadata.labels",
                    "FieldValueInvalid",
                    format!("Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                );
            }
        }
    }
    if let Some(ann) = m.get("annotations").and_then(Value::as_object) {
        for k in ann.keys() {
            if !is_qualified_name(k) {
                return inv("metadata.annotations", "FieldValueInvalid", format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"));
            }
        }
    }
    if let Some(fins) = m.get("finalizers").and_then(Value::as_array) {
        for f in fins.iter().filter_map(Value::as_str) {
            if !is_qualified_name(f) {
                return inv("metadata.finalizers", "FieldValueInvalid", format!("Invalid value: {f:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"));
            }
        }
    }
    Ok(())
}

/// Spec of a pod with the fields an update may change masked out.
fn pod_spec_masked(obj: &Map<String, Value>) -> Value {
    let mut spec = obj.get("spec").cloned().unwrap_or(json!({}));
    if let Some(s) = spec.as_object_mut() {
        for f in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ] {
            s.remove(f);
        }
        for list in ["containers", "initContainers"] {
            if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    spec
}

/// The object without metadata (and status when it is a subresource): what
/// `metadata.generation` tracks.
fn generation_view(obj: &Map<String, Value>, status_sub: bool) -> Map<String, Value> {
    let mut o = obj.clone();
    o.remove("metadata");
    if status_sub {
        o.remove("status");
    }
    o
}

fn has_finalizers(obj: &Map<String, Value>) -> bool {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn stored_rv(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- verbs

fn list(
    st: &State,
    res: Resource,
    ns: Option<&str>,
    q: &[(String, String)],
) -> Result<(u16, Value), ApiError> {
    let labels = LabelSelector::parse(query(q, "labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query(q, "fieldSelector").unwrap_or(""), res)
        .map_err(ApiError::bad_request)?;
    let limit = match query(q, "limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
    };
    let after: Option<Key> = match query(q, "continue") {
        None | Some("") => None,
        Some(c) => {
            let key = c
                .split_once('.')
                .and_then(|(_, k)| hex_decode(k))
                .and_then(|k| {
                    k.split_once('\0')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .ok_or_else(|| {
                    ApiError::bad_request(format!("continue key is not valid: {c:?}"))
                })?;
            Some(key)
        }
    };
    let selected = st.objects(res).iter().filter(|((ons, _), obj)| {
        ns.is_none_or(|n| n == ons) && labels.matches(&labels_of(obj)) && fields.matches(obj)
    });
    let mut items = Vec::new();
    let mut last: Option<&Key> = None;
    let mut remaining = 0u64;
    for (key, obj) in selected {
        if after.as_ref().is_some_and(|a| key <= a) {
            continue;
        }
        if limit > 0 && items.len() as u64 >= limit {
            remaining += 1;
            continue;
        }
        items.push(obj.clone());
        last = Some(key);
    }
    let mut metadata = json!({"resourceVersion": st.rv.to_string()});
    if remaining > 0 {
        let (lns, lname) = last.expect("limit > 0 so something was returned");
        metadata["continue"] = json!(format!(
            "{}.{}",
            st.rv,
            hex_encode(&format!("{lns}\0{lname}"))
        ));
        if query(q, "labelSelector").unwrap_or("").is_empty()
            && query(q, "fieldSelector").unwrap_or("").is_empty()
        {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    Ok((
        200,
        json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": metadata, "items": items}),
    ))
}

fn create(
    st: &mut State,
    res: Resource,
    ns: Option<&str>,
    req: &Request,
    q: &[(String, String)],
) -> Result<(u16, Value), ApiError> {
    let dry = dry_run(q)?;
    let mut obj = decode_body(res, req)?;
    fix_namespace(res, &mut obj, ns)?;
    let ns = meta_str(&obj, "namespace").to_string();
    if meta_str(&obj, "name").is_empty() {
        let gen = meta_str(&obj, "generateName").to_string();
        if gen.is_empty() {
            return Err(ApiError::invalid(
                res,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ));
        }
        let mut name = format!("{gen}{}", st.rng.name_suffix());
        for _ in 0..8 {
            if !st.objects(res).contains_key(&(ns.clone(), name.clone())) {
                break;
            }
            name = format!("{gen}{}", st.rng.name_suffix());
        }
        set_meta(&mut obj, "name", Some(json!(name)));
    }
    validate(res, &obj)?;
    let name = meta_str(&obj, "name").to_string();
    if !meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let key = (ns, name.clone());
    if st.objects(res).contains_key(&key) {
        return Err(ApiError::already_exists(res, &name));
    }
    let uid = st.rng.uuid();
    set_meta(&mut obj, "uid", Some(json!(uid)));
    set_meta(&mut obj, "creationTimestamp", Some(json!(now_rfc3339())));
    set_meta(&mut obj, "deletionTimestamp", None);
    set_meta(&mut obj, "deletionGracePeriodSeconds", None);
    set_meta(
        &mut obj,
        "generation",
        res.has_generation().then(|| json!(1)),
    );
    if !dry {
        let rv = st.next_rv();
        set_meta(&mut obj, "resourceVersion", Some(json!(rv.to_string())));
        st.objects_mut(res).insert(key, Value::Object(obj.clone()));
    }
    Ok((201, Value::Object(obj)))
}

fn update(
    st: &mut State,
    res: Resource,
    key: &Key,
    req: &Request,
    q: &[(String, String)],
    status_only: bool,
) -> Result<(u16, Value), ApiError> {
    let dry = dry_run(q)?;
    let mut obj = decode_body(res, req)?;
    let ns = res.namespaced().then_some(key.0.as_str());
    fix_namespace(res, &mut obj, ns)?;
    let body_name = meta_str(&obj, "name");
    if body_name != key.1 {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            key.1
        )));
    }
    commit_update(st, res, key, obj, dry, status_only, false)
}

/// The shared tail of PUT and PATCH.
fn commit_update(
    st: &mut State,
    res: Resource,
    key: &Key,
    mut new: Map<String, Value>,
    dry: bool,
    status_only: bool,
    from_patch: bool,
) -> Result<(u16, Value), ApiError> {
    let name = key.1.as_str();
    let old = match st.objects(res).get(key) {
        Some(Value::Object(o)) => o.clone(),
        _ => return Err(ApiError::not_found(res, name)),
    };
    let old_rv = meta_str(&old, "resourceVersion").to_string();
    let want_rv = meta_str(&new, "resourceVersion").to_string();
    if want_rv.is_empty() {
        if res == Resource::IpBlocks && !from_patch {
            return Err(ApiError::invalid(
                res,
                name,
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
    } else {
        if want_rv.parse::<u64>().is_err() {
            return Err(ApiError::bad_request(format!(
                "invalid resource version: {want_rv:?}"
            )));
        }
        if want_rv != old_rv {
            return Err(ApiError::stale(res, name));
        }
    }
    let want_uid = meta_str(&new, "uid");
    let old_uid = meta_str(&old, "uid");
    if !want_uid.is_empty() && want_uid != old_uid {
        return Err(ApiError::conflict(
            res,
            name,
            &format!("Precondition failed: UID in precondition: {want_uid}, UID in object meta: {old_uid}"),
        ));
    }
    let status_sub = st.has_status_subresource(res);
    if status_only {
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new.insert("status".into(), s),
            None => new.remove("status"),
        };
    } else if status_sub {
        match old.get("status") {
            Some(s) => new.insert("status".into(), s.clone()),
            None => new.remove("status"),
        };
    }
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        set_meta(&mut new, f, meta(&old).get(f).cloned());
    }
    set_meta(&mut new, "resourceVersion", Some(json!(old_rv)));
    validate(res, &new)?;
    match res {
        Resource::Pods if pod_spec_masked(&new) != pod_spec_masked(&old) => {
            return Err(ApiError::invalid(
                res,
                name,
                "spec",
                "FieldValueForbidden",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ))
        }
        Resource::Nodes => {
            for f in ["/spec/podCIDR", "/spec/podCIDRs"] {
                let o = Value::Object(old.clone());
                let n = Value::Object(new.clone());
                let (ov, nv) = (o.pointer(f), n.pointer(f));
                let empty = |v: Option<&Value>| {
                    v.is_none_or(|v| v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(|a| a.is_empty()))
                };
                if !empty(ov) && ov != nv {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        &f[1..].replace('/', "."),
                        "FieldValueForbidden",
                        "Forbidden: node updates may not change podCIDR except from \"\" to valid",
                    ));
                }
            }
        }
        _ => {}
    }
    let deleting = meta(&old).contains_key("deletionTimestamp");
    if deleting {
        let fins = |o: &Map<String, Value>| -> Vec<Value> {
            meta(o)
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (of, nf) = (fins(&old), fins(&new));
        if nf.iter().any(|f| !of.contains(f)) {
            return Err(ApiError::invalid(
                res,
                name,
                "metadata.finalizers",
                "FieldValueForbidden",
                "Forbidden: no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    if res.has_generation()
        && generation_view(&new, status_sub) != generation_view(&old, status_sub)
    {
        let g = meta(&old)
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        set_meta(&mut new, "generation", Some(json!(g + 1)));
    }
    if new == old {
        // The real server does not write (and does not bump the
        // resourceVersion) when an update changes nothing.
        return Ok((200, Value::Object(old)));
    }
    if dry {
        return Ok((200, Value::Object(new)));
    }
    let rv = st.next_rv();
    set_meta(&mut new, "resourceVersion", Some(json!(rv.to_string())));
    if deleting && !has_finalizers(&new) {
        st.objects_mut(res).remove(key);
    } else {
        st.objects_mut(res)
            .insert(key.clone(), Value::Object(new.clone()));
    }
    Ok((200, Value::Object(new)))
}

fn patch(
    st: &mut State,
    res: Resource,
    key: &Key,
    req: &Request,
    q: &[(String, String)],
    status_only: bool,
) -> Result<(u16, Value), ApiError> {
    let mt = media_type(req);
    let merge = match mt.as_str() {
        "application/merge-patch+json" => true,
        "application/json-patch+json" => false,
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the plumb test API server does not implement {mt} patches; use application/merge-patch+json or application/json-patch+json"),
            ))
        }
        _ => return Err(ApiError::unsupported_media(&mt)),
    };
    let dry = dry_run(q)?;
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let old = st
        .objects(res)
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, &key.1))?;
    let mut doc = old.clone();
    if merge {
        if !body.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        crate::patch::merge_patch(&mut doc, &body);
    } else {
        crate::patch::json_patch(&mut doc, &body).map_err(|e| match e {
            crate::patch::PatchError::Malformed(m) => ApiError::bad_request(m),
            crate::patch::PatchError::Failed(m) => ApiError::new(422, "Invalid", m),
        })?;
    }
    let mut obj = match doc {
        Value::Object(o) => o,
        _ => {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ))
        }
    };
    check_shape(res, &mut obj)?;
    let (ns, name) = (meta_str(&obj, "namespace"), meta_str(&obj, "name"));
    if name != key.1 {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            key.1
        )));
    }
    if res.namespaced() && ns != key.0 {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if meta_str(&obj, "resourceVersion").is_empty() {
        let rv = stored_rv(&old).to_string();
        set_meta(&mut obj, "resourceVersion", Some(json!(rv)));
    }
    commit_update(st, res, key, obj, dry, status_only, true)
}

/// Options from a DeleteOptions body: (dryRun, uid precondition, rv precondition).
fn delete_options(req: &Request) -> Result<(bool, Option<String>, Option<String>), ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok((false, None, None));
    }
    let mt = media_type(req);
    if mt != "application/json" {
        return Err(ApiError::unsupported_media(&mt));
    }
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("DeleteOptions must be a JSON object"))?;
    if let Some(k) = o.get("kind").and_then(Value::as_str) {
        if k != "DeleteOptions" {
            return Err(ApiError::bad_request(format!(
                "expected kind DeleteOptions, got {k:?}"
            )));
        }
    }
    let dry = match o.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) if a.iter().all(|x| x.as_str() == Some("All")) => !a.is_empty(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid dryRun value: only [\"All\"] is supported",
            ))
        }
    };
    let pre = o.get("preconditions").and_then(Value::as_object);
    let get = |f: &str| -> Result<Option<String>, ApiError> {
        match pre.and_then(|p| p.get(f)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "preconditions.{f} must be a string"
            ))),
        }
    };
    Ok((dry, get("uid")?, get("resourceVersion")?))
}

/// Delete (or mark for deletion when finalizers are present) one object.
fn delete_one(
    st: &mut State,
    res: Resource,
    key: &Key,
    dry: bool,
    uid: Option<&str>,
    rv: Option<&str>,
) -> Result<(u16, Value), ApiError> {
    let name = key.1.as_str();
    let mut obj = match st.objects(res).get(key) {
        Some(Value::Object(o)) => o.clone(),
        _ => return Err(ApiError::not_found(res, name)),
    };
    if let Some(u) = uid {
        let have = meta_str(&obj, "uid");
        if u != have {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(r) = rv {
        let have = meta_str(&obj, "resourceVersion");
        if r != have {
            return Err(ApiError::conflict(
                res,
                name,
                &format!("Precondition failed: ResourceVersion in precondition: {r}, ResourceVersion in object meta: {have}"),
            ));
        }
    }
    if has_finalizers(&obj) {
        if meta(&obj).contains_key("deletionTimestamp") || dry {
            return Ok((200, Value::Object(obj)));
        }
        set_meta(&mut obj, "deletionTimestamp", Some(json!(now_rfc3339())));
        set_meta(&mut obj, "deletionGracePeriodSeconds", Some(json!(0)));
        let rv = st.next_rv();
        set_meta(&mut obj, "resourceVersion", Some(json!(rv.to_string())));
        st.objects_mut(res)
            .insert(key.clone(), Value::Object(obj.clone()));
        return Ok((200, Value::Object(obj)));
    }
    if !dry {
        st.objects_mut(res).remove(key);
        st.next_rv();
    }
    Ok((200, Value::Object(obj)))
}

fn delete(
    st: &mut State,
    res: Resource,
    key: &Key,
    req: &Request,
    q: &[(String, String)],
) -> Result<(u16, Value), ApiError> {
    let dry_q = dry_run(q)?;
    let (dry_b, uid, rv) = delete_options(req)?;
    delete_one(st, res, key, dry_q || dry_b, uid.as_deref(), rv.as_deref())
}

fn delete_collection(
    st: &mut State,
    res: Resource,
    ns: Option<&str>,
    req: &Request,
    q: &[(String, String)],
) -> Result<(u16, Value), ApiError> {
    let dry_q = dry_run(q)?;
    let (dry_b, uid, rv) = delete_options(req)?;
    if uid.is_some() || rv.is_some() {
        return Err(ApiError::bad_request(
            "preconditions are not supported for deletecollection",
        ));
    }
    let (_, listed) = list(st, res, ns, q)?;
    let mut items = Vec::new();
    for item in listed["items"].as_array().cloned().unwrap_or_default() {
        let key = (
            item.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            item.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        );
        let (_, obj) = delete_one(st, res, &key, dry_q || dry_b, None, None)?;
        items.push(obj);
    }
    Ok((
        200,
        json!({"kind": res.list_kind(), "apiVersion": res.api_version(),
               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    ))
}

// ---------------------------------------------------------------- direct access

/// Store `obj` as given (create or replace), bypassing HTTP, preconditions
/// and immutability rules; server-managed fields are filled in.
pub(crate) fn put_direct(st: &mut State, res: Resource, obj: Value) -> Result<Value, String> {
    let mut obj = match obj {
        Value::Object(o) => o,
        _ => return Err("object must be a JSON object".into()),
    };
    check_shape(res, &mut obj).map_err(|e| e.message)?;
    if res.namespaced() {
        if meta_str(&obj, "namespace").is_empty() {
            return Err(format!("{} objects need metadata.namespace", res.kind()));
        }
    } else {
        set_meta(&mut obj, "namespace", None);
    }
    validate(res, &obj).map_err(|e| e.message)?;
    let key = (
        meta_str(&obj, "namespace").to_string(),
        meta_str(&obj, "name").to_string(),
    );
    let old = st.objects(res).get(&key).cloned();
    for f in ["uid", "creationTimestamp"] {
        if meta_str(&obj, f).is_empty() {
            let v = match (&old, f) {
                (Some(o), _) => o["metadata"][f].clone(),
                (None, "uid") => json!(st.rng.uuid()),
                (None, _) => json!(now_rfc3339()),
            };
            set_meta(&mut obj, f, Some(v));
        }
    }
    if res.has_generation() && !meta(&obj).contains_key("generation") {
        let g = old
            .as_ref()
            .and_then(|o| o.pointer("/metadata/generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        set_meta(&mut obj, "generation", Some(json!(g + 1)));
    }
    let rv = st.next_rv();
    set_meta(&mut obj, "resourceVersion", Some(json!(rv.to_string())));
    let v = Value::Object(obj);
    st.objects_mut(res).insert(key, v.clone());
    Ok(v)
}

/// Remove an object immediately (finalizers ignored), bypassing HTTP.
pub(crate) fn delete_direct(
    st: &mut State,
    res: Resource,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    let key = (ns.unwrap_or("").to_string(), name.to_string());
    let old = st.objects_mut(res).remove(&key);
    if old.is_some() {
        st.next_rv();
    }
    old
}

/// One stored object.
pub(crate) fn get_direct(st: &State, res: Resource, ns: Option<&str>, name: &str) -> Option<Value> {
    st.objects(res)
        .get(&(ns.unwrap_or("").to_string(), name.to_string()))
        .cloned()
}

/// All stored objects of a resource, in API list order.
pub(crate) fn all_direct(st: &State, res: Resource) -> Vec<Value> {
    st.objects(res).values().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/api/v1/namespaces/a/pods/b").unwrap(),
            Route::Item {
                res: Resource::Pods,
                ns: Some("a".into()),
                name: "b".into(),
                status: false
            }
        );
        assert_eq!(
            route("/api/v1/pods").unwrap(),
            Route::Collection {
                res: Resource::Pods,
                ns: None
            }
        );
        assert_eq!(route("/api/v1/pods/x").unwrap(), Route::NotFound);
        assert_eq!(
            route("/api/v1/namespaces/a/nodes").unwrap(),
            Route::NotFound
        );
        assert_eq!(
            route("/apis/plumb.dev/v1alpha1/ipblocks/x/status").unwrap(),
            Route::Item {
                res: Resource::IpBlocks,
                ns: None,
                name: "x".into(),
                status: true
            }
        );
        assert_eq!(
            route("/apis/plumb.dev/v1alpha1/namespaces/a/ipblocks").unwrap(),
            Route::NotFound
        );
        assert_eq!(route("/api/v1/nodes/x/proxy").unwrap(), Route::NotFound);
        assert_eq!(
            route("/apis/plumb.dev/v1alpha1").unwrap(),
            Route::PlumbResources
        );
    }
}
