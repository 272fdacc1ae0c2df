//! The installer script of deploy/installer-daemonset.yaml, exactly as its ConfigMap carries it, run
//! the way the DaemonSet runs it (every host path redirected into a temporary directory), in both of its
//! modes, under the machine's `/bin/sh` and under the image's shell (busybox, with nothing but its applets
//! on PATH): `PLUMB_STORE=file` (binaries and the file store's data dir, which the installed plumb-ipam
//! then uses for a real ADD and DEL) and `PLUMB_STORE=kubernetes` (the kubeconfig written from the
//! projected token and rewritten when it rotates; kube_real.rs runs it against a real API server), an
//! upgrade that replaces binaries by rename, and the refusals. Then the image's root filesystem that
//! `scripts/image` assembles (`PLUMB_IMAGE_ROOTFS`): every binary static and answering a CNI VERSION call
//! in an otherwise empty root. Nothing here needs a container engine or an API server.

use conformance::plugin::Call;
use conformance::skip::{have_command, is_root, skip};
use conformance::{plumb_bin, TempDir};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The installer script, exactly as deploy/installer-daemonset.yaml's ConfigMap carries it.
fn script() -> String {
    use serde::Deserialize;
    let path = conformance::workspace_root().join("deploy/installer-daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/installer-daemonset.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .collect();
    docs.iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["install.sh"].is_string())
        .and_then(|d| d["data"]["install.sh"].as_str().map(String::from))
        .expect("a ConfigMap with data.install.sh")
}

/// A shell the script runs under: the program and, for the image's shell, the only PATH it gets.
struct Shell {
    name: &'static str,
    program: PathBuf,
    path: Option<PathBuf>,
    _applets: Option<TempDir>,
}

/// `/bin/sh`, and busybox as the image has it: the rootfs's `/bin` when `scripts/image` built one,
/// else a directory of the host busybox's applets (a loud skip of that half when there is no busybox).
fn shells(test: &str) -> Vec<Shell> {
    let mut out = vec![Shell {
        name: "/bin/sh",
        program: "/bin/sh".into(),
        path: None,
        _applets: None,
    }];
    if let Some(root) = std::env::var_os("PLUMB_IMAGE_ROOTFS") {
        let bin = Path::new(&root).join("bin");
        out.push(Shell {
            name: "the image's busybox",
            program: bin.join("sh"),
            path: Some(bin),
            _applets: None,
        });
    } else if have_command("busybox") {
        let dir = TempDir::new("applets");
        let list = Command::new("busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            std::os::unix::fs::symlink(which("busybox"), dir.path().join(applet))
                .expect("link an applet");
        }
        out.push(Shell {
            name: "busybox",
            program: dir.path().join("sh"),
            path: Some(dir.path().to_path_buf()),
            _applets: Some(dir),
        });
    } else {
        skip(
            test,
            "no busybox (apt busybox-static): the script is not tried with the image's shell",
        );
    }
    out
}

fn which(cmd: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{cmd} not on PATH"))
}

/// One node's worth of host directories, under a temporary directory.
struct Node {
    dir: TempDir,
}

impl Node {
    fn new() -> Node {
        let n = Node {
            dir: TempDir::new("inst"),
        };
        std::fs::create_dir_all(n.bin_src()).expect("mkdir bin-src");
        n
    }
    fn bin_src(&self) -> PathBuf {
        self.dir.path().join("bin-src")
    }
    fn cni_bin(&self) -> PathBuf {
        self.dir.path().join("cni-bin")
    }
    fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn tokens(&self) -> PathBuf {
        self.dir.path().join("token")
    }
    fn kubeconfig(&self) -> PathBuf {
        self.conf().join("plumb.kubeconfig")
    }

    /// Starts the installer under `shell` with `env` on top of the node's paths.
    fn start(&self, shell: &Shell, env: &[(&str, &str)]) -> Installer {
        let out = self.dir.path().join("installer.out");
        let mut cmd = Command::new(&shell.program);
        cmd.arg("-c")
            .arg(script())
            .env_clear()
            .env(
                "PATH",
                shell
                    .path
                    .clone()
                    .unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("PLUMB_BIN_SRC", self.bin_src())
            .env("PLUMB_CNI_BIN_DIR", self.cni_bin())
            .env("PLUMB_CONF_DIR", self.conf())
            .env("PLUMB_DATA_DIR", self.data())
            .env("PLUMB_TOKEN_DIR", self.tokens())
            .env("PLUMB_REFRESH_SECONDS", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create the installer's log"))
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Installer {
            child: cmd.spawn().expect("start the installer"),
            out,
            shell: shell.name,
        }
    }
}

/// A running installer; killed on drop.
struct Installer {
    child: Child,
    out: PathBuf,
    shell: &'static str,
}

impl Installer {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (at most 20 s) until its output has `line`; panics if it exits first.
    fn wait_for(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(line) {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{}: the installer exited ({st}) before {line:?}: {}",
                    self.shell,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {line:?} in {}",
                self.shell,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 20 s) for it to exit by itself; its exit code.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running: {}",
                self.shell,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as the kubelet stops the pod; asserts a clean exit 0.
    fn stop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own live child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill");
        assert_eq!(self.exit_code(), 0, "{}: {}", self.shell, self.log());
        assert!(
            self.log().contains("stopping"),
            "{}: {}",
            self.shell,
            self.log()
        );
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// PLUMB_STORE=file: the binaries (through a rename, no temporary file left), the data dir (0700), no
/// kubeconfig, node-name or token needed; the installed plumb-ipam then runs a file-store ADD and DEL in
/// that data dir; SIGTERM stops it cleanly.
#[test]
fn file_store_mode_installs_binaries_and_data_dir_and_no_kubeconfig() {
    let test = "file_store_mode_installs_binaries_and_data_dir_and_no_kubeconfig";
    for shell in shells(test) {
        let node = Node::new();
        std::fs::copy(plumb_bin("plumb-ipam"), node.bin_src().join("plumb-ipam"))
            .expect("copy plumb-ipam");
        std::fs::write(node.bin_src().join("plumb-bridge"), b"bridge v1").expect("write");
        let mut inst = node.start(&shell, &[("PLUMB_STORE", "file")]);
        inst.wait_for("file store: binaries installed");
        let who = shell.name;
        assert_eq!(
            names(&node.cni_bin()),
            ["plumb-bridge", "plumb-ipam"],
            "{who}"
        );
        for n in ["plumb-bridge", "plumb-ipam"] {
            assert_eq!(mode(&node.cni_bin().join(n)), 0o755, "{who}: {n}");
            assert_eq!(
                std::fs::read(node.cni_bin().join(n)).expect("read"),
                std::fs::read(node.bin_src().join(n)).expect("read"),
                "{who}: {n}"
            );
        }
        assert_eq!(mode(&node.data()), 0o700, "{who}: the data dir");
        assert_eq!(
            names(&node.data()),
            Vec::<String>::new(),
            "{who}: probe left"
        );
        assert!(
            !node.conf().exists(),
            "{who}: file mode wrote {}",
            node.conf().display()
        );
        assert!(!inst.log().contains("wrote"), "{who}: {}", inst.log());

        // The file store works with what the installer left: the installed binary, the data dir.
        let conf = json!({"cniVersion": "1.1.0", "name": "filenet", "type": "plumb-ipam",
            "ipam": {"type": "plumb-ipam", "range": "10.88.0.0/29", "gateway": "10.88.0.1",
                     "dataDir": node.data()}});
        let installed = node.cni_bin().join("plumb-ipam");
        let call = |cmd| Call::new(cmd, "c1", "/run/netns/none", "eth0", &conf).run(&installed);
        let r = call("ADD").ok();
        assert_eq!(r["ips"][0]["address"], "10.88.0.2/29", "{who}: {r}");
        let claims = || conformance::ipam_records(&node.data(), &["ip-"]);
        assert_eq!(claims().len(), 1, "{who}: {:?}", claims());
        assert_eq!(call("DEL").ok(), Value::Null, "{who}");
        assert!(claims().is_empty(), "{who}: {:?}", claims());
        inst.stop();
    }
}

/// PLUMB_STORE=kubernetes (the default): the kubeconfig (0600) with the server, the CA and the token,
/// the node-name file, the data dir; a rotated token is written within the refresh period.
#[test]
fn kubernetes_mode_writes_the_kubeconfig_and_follows_the_token() {
    let test = "kubernetes_mode_writes_the_kubeconfig_and_follows_the_token";
    for shell in shells(test) {
        let who = shell.name;
        let node = Node::new();
        std::fs::create_dir_all(node.tokens()).expect("mkdir token");
        std::fs::write(
            node.tokens().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nCA\n",
        )
        .expect("write ca");
        std::fs::write(node.tokens().join("token"), "tok-one").expect("write token");
        std::fs::write(node.bin_src().join("plumb-ipam-kube"), b"kube v1").expect("write");
        let mut inst = node.start(
            &shell,
            &[
                ("PLUMB_API_SERVER", "https://192.0.2.10:6443"),
                ("PLUMB_NODE_NAME", "node-a"),
            ],
        );
        inst.wait_for(&format!("wrote {}", node.kubeconfig().display()));
        let kc = std::fs::read_to_string(node.kubeconfig()).expect("kubeconfig");
        assert!(
            kc.contains("server: \"https://192.0.2.10:6443\""),
            "{who}: {kc}"
        );
        assert!(kc.contains("token: \"tok-one\""), "{who}: {kc}");
        // base64 of the CA file, on one line.
        assert!(
            kc.contains(
                "certificate-authority-data: \"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkNBCg==\""
            ),
            "{who}: {kc}"
        );
        assert_eq!(mode(&node.kubeconfig()), 0o600, "{who}");
        assert_eq!(
            std::fs::read_to_string(node.conf().join("node-name")).expect("node-name"),
            "node-a\n",
            "{who}"
        );
        assert_eq!(mode(&node.data()), 0o700, "{who}: the data dir");
        assert_eq!(names(&node.cni_bin()), ["plumb-ipam-kube"], "{who}");

        std::fs::write(node.tokens().join("token.new"), "tok-two").expect("write");
        std::fs::rename(node.tokens().join("token.new"), node.tokens().join("token"))
            .expect("rotate");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(node.kubeconfig())
            .unwrap_or_default()
            .contains("token: \"tok-two\"")
        {
            assert!(
                Instant::now() < deadline,
                "{who}: the rotated token was not written"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            names(&node.conf()),
            ["node-name", "plumb.kubeconfig"],
            "{who}: temporary files left"
        );
        inst.stop();
    }
}

/// An upgrade (a new image on the DaemonSet): a changed binary is replaced by a rename, so a plugin
/// process already running the old file keeps a complete copy (the old inode is untouched), and an
/// unchanged binary is not rewritten at all.
#[test]
fn upgrade_replaces_changed_binaries_by_rename_and_leaves_the_rest() {
    let test = "upgrade_replaces_changed_binaries_by_rename_and_leaves_the_rest";
    for shell in shells(test) {
        let who = shell.name;
        let node = Node::new();
        std::fs::write(node.bin_src().join("plumb-bridge"), b"bridge v1").expect("write");
        std::fs::write(node.bin_src().join("plumb-vxlan"), b"vxlan v1").expect("write");
        let mut inst = node.start(&shell, &[("PLUMB_STORE", "file")]);
        inst.wait_for("file store:");
        inst.stop();
        let bridge = node.cni_bin().join("plumb-bridge");
        let vxlan = node.cni_bin().join("plumb-vxlan");
        let (bridge_ino, vxlan_ino) = (
            std::fs::metadata(&bridge).expect("stat").ino(),
            std::fs::metadata(&vxlan).expect("stat").ino(),
        );
        // A "running plugin": an open descriptor of the old binary.
        let old = std::fs::File::open(&bridge).expect("open the old binary");

        std::fs::write(node.bin_src().join("plumb-bridge"), b"bridge v2, longer").expect("write");
        let mut inst = node.start(&shell, &[("PLUMB_STORE", "file")]);
        inst.wait_for("file store:");
        inst.stop();
        let log = inst.log();
        assert!(log.contains("installed plumb-bridge"), "{who}: {log}");
        assert!(!log.contains("installed plumb-vxlan"), "{who}: {log}");
        assert_eq!(std::fs::read(&bridge).expect("read"), b"bridge v2, longer");
        assert_ne!(
            std::fs::metadata(&bridge).expect("stat").ino(),
            bridge_ino,
            "{who}"
        );
        assert_eq!(
            std::fs::metadata(&vxlan).expect("stat").ino(),
            vxlan_ino,
            "{who}"
        );
        let mut kept = String::new();
        std::io::Read::read_to_string(&mut &old, &mut kept).expect("read the old inode");
        assert_eq!(
            kept, "bridge v1",
            "{who}: the old binary was changed in place"
        );
        assert_eq!(
            names(&node.cni_bin()),
            ["plumb-bridge", "plumb-vxlan"],
            "{who}"
        );
    }
}

/// A PLUMB_STORE that is neither mode is refused before anything is installed (exit 2, naming the
/// value and both choices); a data dir that cannot be made stops the installer (exit 1, naming it and
/// PLUMB_DATA_DIR) instead of leaving the first pod start to fail.
#[test]
fn bad_store_or_data_dir_stop_the_installer_with_the_reason() {
    let test = "bad_store_or_data_dir_stop_the_installer_with_the_reason";
    for shell in shells(test) {
        let who = shell.name;
        let node = Node::new();
        std::fs::write(node.bin_src().join("plumb-bridge"), b"bridge").expect("write");
        let mut inst = node.start(&shell, &[("PLUMB_STORE", "files")]);
        assert_eq!(inst.exit_code(), 2, "{who}: {}", inst.log());
        assert!(
            inst.log()
                .contains("PLUMB_STORE is \"files\": set it to \"kubernetes\" or \"file\""),
            "{who}: {}",
            inst.log()
        );
        assert!(
            !node.cni_bin().exists(),
            "{who}: installed despite the refusal"
        );

        let blocker = node.dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").expect("write");
        let data = blocker.join("plumb-ipam");
        let data = data.to_str().expect("UTF-8");
        let mut inst = node.start(&shell, &[("PLUMB_STORE", "file"), ("PLUMB_DATA_DIR", data)]);
        assert_eq!(inst.exit_code(), 1, "{who}: {}", inst.log());
        assert!(
            inst.log().contains(&format!(
                "cannot create {data}: the file store needs it on the host (PLUMB_DATA_DIR)"
            )),
            "{who}: {}",
            inst.log()
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The image's root filesystem (scripts/image)

/// Whether an ELF file asks for a program interpreter (PT_INTERP): a dynamically linked executable.
fn has_interpreter(elf: &[u8]) -> bool {
    assert!(elf.len() > 64 && &elf[..4] == b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    assert_eq!(elf[5], 1, "not a little-endian ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("e_phoff")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().expect("p_type")) == 3
    })
}

/// The rootfs `scripts/image` assembled: every file of /opt/plumb/bin and /bin/busybox is a static ELF
/// executable, and each plumb binary, run in a chroot of that rootfs (no libc, no /etc, nothing else),
/// answers a CNI VERSION call with the versions it supports.
#[test]
fn image_binaries_are_static_and_run_in_an_empty_root() {
    let test = "image_binaries_are_static_and_run_in_an_empty_root";
    let Some(root) = std::env::var_os("PLUMB_IMAGE_ROOTFS").map(PathBuf::from) else {
        skip(
            test,
            "PLUMB_IMAGE_ROOTFS is not set: run scripts/image (scripts/test does) to build the static binaries",
        );
        return;
    };
    if !is_root() {
        skip(test, "needs root to chroot into the image's rootfs");
        return;
    }
    let bins = names(&root.join("opt/plumb/bin"));
    assert_eq!(
        bins,
        [
            "plumb-bridge",
            "plumb-ipam",
            "plumb-ipam-kube",
            "plumb-macspoofchk",
            "plumb-vxlan"
        ]
    );
    for p in bins
        .iter()
        .map(|b| root.join("opt/plumb/bin").join(b))
        .chain([root.join("bin/busybox")])
    {
        let elf = std::fs::read(&p).expect("read");
        assert!(
            !has_interpreter(&elf),
            "{} is dynamically linked",
            p.display()
        );
    }
    for b in &bins {
        let out = Command::new(which("chroot"))
            .arg(&root)
            .arg(format!("/opt/plumb/bin/{b}"))
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::null())
            .output()
            .expect("chroot");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{b}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{b}: {e}: {stdout}"));
        let versions = v["supportedVersions"]
            .as_array()
            .expect("supportedVersions");
        assert!(versions.contains(&json!("1.1.0")), "{b}: {v}");
        assert!(versions.contains(&json!("0.4.0")), "{b}: {v}");
    }
}
