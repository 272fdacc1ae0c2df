//! A real Kubernetes control plane on loopback for the kube-real lane: the etcd and kube-apiserver that
//! `scripts/control-plane` builds from the Go module proxy, started with real authentication (a test
//! CA, client certificates, service-account token signing), `--authorization-mode=RBAC` and an audit
//! log that counts every request per user.
//!
//! One control plane serves a whole test binary ([`shared`]): started on first use, stopped at exit.
//! Tests talk to it with [`ControlPlane::request`] (curl with the admin's client certificate or a
//! bearer token) and read who made which request from [`ControlPlane::audit_events`].

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The user the admin client certificate names (group `system:masters`).
pub const ADMIN_USER: &str = "plumb-test-admin";

/// The service-account issuer the API server signs tokens as.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A running etcd + kube-apiserver pair and the files they use.
pub struct ControlPlane {
    dir: PathBuf,
    url: String,
    /// Seconds from starting etcd to kube-apiserver's `/readyz` answering `ok`.
    pub start_seconds: f64,
    /// What `/version` reports (`gitVersion`).
    pub version: String,
}

/// What [`ControlPlane::request`] authenticates as.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// The admin client certificate (`system:masters`).
    Admin,
    /// A bearer token (e.g. a service account's, from the TokenRequest API).
    Token(&'a str),
    /// No credentials at all.
    Anonymous,
}

/// An HTTP answer: status code and body (JSON, or `Value::String` of the raw text when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

/// The pids of the running servers (process-group leaders) and their directories, for the exit hook.
static RUNNING: Mutex<(Vec<i32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

/// The control plane shared by every test of this binary, started on first use (panics, saying why,
/// when it cannot start: the kube-real lane must not pass without a real server). A failed start is
/// not retried by the next test: each panics with the first one's reason.
pub fn shared() -> &'static ControlPlane {
    static CP: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let cp = CP.get_or_init(|| {
        let r = ControlPlane::start();
        match &r {
            Ok(cp) => eprintln!(
                "control plane: kube-apiserver {} ready in {:.1}s at {}",
                cp.version, cp.start_seconds, cp.url
            ),
            // Nothing of a failed start is left running or on disk.
            Err(_) => stop_at_exit(),
        }
        r
    });
    match cp {
        Ok(cp) => cp,
        Err(e) => panic!("cannot start the real control plane: {e}"),
    }
}

/// The directory holding `kube-apiserver` and `etcd`: `PLUMB_CONTROL_PLANE_BIN`, else what
/// `scripts/control-plane` prints (it builds them when its cache lacks them).
pub fn binaries() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("PLUMB_CONTROL_PLANE_BIN") {
        return Ok(PathBuf::from(d));
    }
    let script = crate::workspace_root().join("scripts/control-plane");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// `N` distinct free TCP ports on 127.0.0.1 (all bound at once, then released: the servers bind them
/// right after).
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l
            .local_addr()
            .map(|a: SocketAddr| a.port())
            .map_err(|e| e.to_string())?;
    }
    Ok(ports)
}

/// Runs a command to completion, failing with its stderr.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Writes the test PKI into `dir` with openssl: a CA, kube-apiserver's serving certificate (for
/// 127.0.0.1 and localhost), the admin's client certificate and the service-account signing key.
fn make_pki(dir: &Path) -> Result<(), String> {
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    ossl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3",
                "-subj",
                "/CN=plumb-test-ca",
            ],
        ]
        .concat(),
    )?;
    let leaf = |name: &str, subj: &str, ext: &str| -> Result<(), String> {
        std::fs::write(dir.join(format!("{name}.ext")), ext).map_err(|e| e.to_string())?;
        let (key, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        ossl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", subj],
            ]
            .concat(),
        )?;
        ossl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3",
            "-out",
            &crt,
            "-extfile",
            &extf,
        ])
    };
    leaf(
        "server",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n",
    )?;
    leaf(
        "admin",
        &format!("/O=system:masters/CN={ADMIN_USER}"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    ossl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-out",
        "sa.key",
    ])?;
    ossl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

/// Starts `bin` with `args` in its own process group, output to `log`, killed if this process dies.
///
/// The spawn happens on a thread that lives as long as the process, because the parent-death signal
/// fires when the *thread* that forked exits, and test threads end with their test.
fn spawn(bin: &Path, args: Vec<String>, log: &Path) -> Result<Child, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (bin, log) = (bin.to_path_buf(), log.to_path_buf());
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            let r = (|| {
                let out =
                    std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
                let err = out.try_clone().map_err(|e| e.to_string())?;
                let mut cmd = Command::new(&bin);
                cmd.args(&args)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .process_group(0);
                // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it is the only
                // call made between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))
            })();
            let _ = tx.send(r);
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

/// Stops the servers (SIGTERM to each process group, SIGKILL after 10 s) and removes their directories.
extern "C" fn stop_at_exit() {
    let Ok(mut running) = RUNNING.lock() else {
        return;
    };
    for &pid in &running.0 {
        // SAFETY: kill has no memory preconditions; -pid names the process group the server leads.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for &pid in &running.0 {
        // Reap it (it is this process's child): a server left unreaped would stay a zombie, as the
        // machine's pid 1 may not reap orphans.
        // SAFETY: waitpid on our own child with a valid status pointer; WNOHANG never blocks.
        let reaped = || unsafe {
            let mut status = 0;
            libc::waitpid(pid, &mut status, libc::WNOHANG) != 0
        };
        let mut gone = reaped();
        while !gone && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            gone = reaped();
        }
        if !gone {
            // SAFETY: kill has no memory preconditions; -pid is the group the server still leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            // SAFETY: waitpid on our own child with a valid status pointer; it has been killed.
            unsafe {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
        }
    }
    running.0.clear();
    for dir in running.1.drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl ControlPlane {
    /// Builds (if needed) and starts etcd and kube-apiserver on free loopback ports, and waits until
    /// kube-apiserver's `/readyz` is `ok` (at most 120 s).
    pub fn start() -> Result<ControlPlane, String> {
        let bins = binaries()?;
        let dir = std::env::temp_dir().join(crate::unique_name("kreal"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        {
            let mut running = RUNNING.lock().map_err(|e| e.to_string())?;
            running.1.push(dir.clone());
            static HOOK: std::sync::Once = std::sync::Once::new();
            // SAFETY: registers a plain extern "C" function with no arguments, as atexit requires.
            HOOK.call_once(|| unsafe {
                libc::atexit(stop_at_exit);
            });
        }
        make_pki(&dir)?;
        std::fs::write(
            dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n  - level: Metadata\n",
        )
        .map_err(|e| e.to_string())?;

        let started = Instant::now();
        let [client, peer, secure] = free_ports::<3>()?;
        let etcd = spawn(
            &bins.join("etcd"),
            vec![
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-url=http://127.0.0.1:{client}"),
                format!("--listen-peer-url=http://127.0.0.1:{peer}"),
            ],
            &dir.join("etcd.log"),
        )?;
        RUNNING
            .lock()
            .map_err(|e| e.to_string())?
            .0
            .push(etcd.id() as i32);
        let d = |f: &str| dir.join(f).display().to_string();
        let apiserver = spawn(
            &bins.join("kube-apiserver"),
            vec![
                format!("--etcd-servers=http://127.0.0.1:{client}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // The `kubernetes` Service's endpoints may not be on loopback, and nothing here needs them.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={secure}"),
                format!("--cert-dir={}", d("certs")),
                format!("--tls-cert-file={}", d("server.crt")),
                format!("--tls-private-key-file={}", d("server.key")),
                format!("--client-ca-file={}", d("ca.crt")),
                "--anonymous-auth=false".into(),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={ISSUER}"),
                format!("--service-account-key-file={}", d("sa.pub")),
                format!("--service-account-signing-key-file={}", d("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                format!("--audit-policy-file={}", d("audit-policy.yaml")),
                format!("--audit-log-path={}", d("audit.log")),
                "--audit-log-format=json".into(),
                "--audit-log-mode=blocking".into(),
                "--profiling=false".into(),
            ],
            &dir.join("kube-apiserver.log"),
        )?;
        RUNNING
            .lock()
            .map_err(|e| e.to_string())?
            .0
            .push(apiserver.id() as i32);

        let mut cp = ControlPlane {
            dir,
            url: format!("https://127.0.0.1:{secure}"),
            start_seconds: 0.0,
            version: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut children = [("etcd", etcd), ("kube-apiserver", apiserver)];
        loop {
            for (name, c) in children.iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "{name} exited ({status}) before kube-apiserver was ready; its log ends:\n{}",
                        cp.log_tail(name)
                    ));
                }
            }
            if let Ok(a) = cp.request("GET", "/readyz", None, Auth::Admin) {
                if a.status == 200 {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver not ready within 120 s; its log ends:\n{}",
                    cp.log_tail("kube-apiserver")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        cp.start_seconds = started.elapsed().as_secs_f64();
        // The children are reaped by nobody but the exit hook's signals; keeping the handles is not
        // needed (their pids are in RUNNING).
        drop(children);
        let v = cp.request("GET", "/version", None, Auth::Admin)?;
        cp.version = v.body["gitVersion"].as_str().unwrap_or("?").to_string();
        Ok(cp)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A fresh directory `name` inside the control plane's own, removed with it at exit.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let d = self.dir.join(crate::unique_name(name));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        d
    }

    /// Writes a kubeconfig at `path` for the admin (its client certificate, `system:masters`) on the
    /// host's loopback URL, for kubectl.
    pub fn write_admin_kubeconfig(&self, path: &Path) {
        let f = |n: &str| self.dir.join(n).display().to_string();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    \
             client-key: {}\ncontexts:\n- name: admin\n  context:\n    cluster: real\n    user: admin\n\
             current-context: admin\n",
            self.url,
            f("ca.crt"),
            f("admin.crt"),
            f("admin.key")
        );
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The PEM of the CA that signed the serving certificate (what a kubeconfig's
    /// `certificate-authority-data` carries).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.crt")).expect("ca.crt")
    }

    /// The last 40 lines of `etcd` or `kube-apiserver`'s log.
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// One request to the API server: `method` on `path` (with its query), an optional JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        auth: Auth,
    ) -> Result<Answer, String> {
        self.request_accept(method, path, body, auth, "application/json")
    }

    /// [`ControlPlane::request`] with an explicit `Accept` header (e.g. a Table).
    pub fn request_accept(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        auth: Auth,
        accept: &str,
    ) -> Result<Answer, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method])
            .arg("--cacert")
            .arg(self.dir.join("ca.crt"))
            .args(["-H", &format!("Accept: {accept}")])
            .args(["-w", "\n%{http_code}", "-o", "-"]);
        match auth {
            Auth::Admin => {
                cmd.arg("--cert").arg(self.dir.join("admin.crt"));
                cmd.arg("--key").arg(self.dir.join("admin.key"));
            }
            Auth::Token(t) => {
                cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
            }
            Auth::Anonymous => {}
        }
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        if body.is_some() {
            cmd.args([
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                "@-",
            ]);
        }
        cmd.arg(format!("{}{path}", self.url));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("curl: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        if let Some(b) = body {
            stdin
                .write_all(b.to_string().as_bytes())
                .map_err(|e| format!("curl stdin: {e}"))?;
        }
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| format!("curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl {method} {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code
            .trim()
            .parse()
            .map_err(|_| format!("curl: no status in {text:?}"))?;
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
        Ok(Answer { status, body })
    }

    /// Creates namespace `ns` with its `default` service account, which Pod admission looks up (no
    /// controller manager runs here to make it).
    pub fn create_namespace(&self, ns: &str) {
        self.admin(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
            201,
        );
        self.admin(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            Some(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})),
            201,
        );
    }

    /// [`ControlPlane::request`] as the admin, which must answer `want`; the body.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let a = self
            .request(method, path, body, Auth::Admin)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(a.status, want, "{method} {path}: {}", a.body);
        a.body
    }

    /// Creates `obj` (with `apiVersion`, `kind` and `metadata.name`) as the admin at its collection
    /// path `collection`, or replaces it when it exists (an `apply` for test setup).
    pub fn apply(&self, collection: &str, obj: &Value) {
        let a = self
            .request("POST", collection, Some(obj), Auth::Admin)
            .unwrap_or_else(|e| panic!("POST {collection}: {e}"));
        if a.status == 409 {
            let name = obj["metadata"]["name"].as_str().expect("metadata.name");
            let path = format!("{collection}/{name}");
            let mut obj = obj.clone();
            let cur = self.admin("GET", &path, None, 200);
            obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            self.admin("PUT", &path, Some(&obj), 200);
        } else {
            assert_eq!(a.status, 201, "POST {collection}: {}", a.body);
        }
    }

    /// A token of service account `namespace/name` from the TokenRequest API, valid `seconds`.
    pub fn token(&self, namespace: &str, name: &str, seconds: u64) -> String {
        let req = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        });
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let a = self.admin("POST", &path, Some(&req), 201);
        a["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no status.token in {a}"))
            .to_string()
    }

    /// The audit log's current length: a mark for [`ControlPlane::audit_events`].
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(self.dir.join("audit.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The completed requests (`ResponseComplete` audit events) logged after `mark`, once the log has
    /// stopped growing for 300 ms (an event is written just after its response is sent).
    pub fn audit_events(&self, mark: u64) -> Vec<Value> {
        let path = self.dir.join("audit.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.audit_mark();
        let mut still_since = Instant::now();
        while Instant::now() < deadline && still_since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.audit_mark();
            if now != last {
                last = now;
                still_since = Instant::now();
            }
        }
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            use std::io::Seek;
            let _ = f.seek(std::io::SeekFrom::Start(mark));
            let _ = f.read_to_string(&mut text);
        }
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .collect()
    }
}
