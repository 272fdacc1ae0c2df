//! Running a CNI plugin binary the way a runtime does: env vars, config on stdin, JSON on stdout.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What one plugin invocation returned.
#[derive(Debug)]
pub struct Outcome {
    /// Process exit code (-1 if killed by a signal).
    pub exit: i32,
    /// Raw stdout.
    pub stdout: String,
    /// Raw stderr.
    pub stderr: String,
}

impl Outcome {
    /// Parses stdout as JSON; panics with the raw output if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} stderr: {:?}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success (exit 0) and returns the parsed result (Null when stdout is empty).
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.exit, 0,
            "plugin failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with the given code; returns the error object.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(
            self.exit, 0,
            "expected error code {code}, got success: {}",
            self.stdout
        );
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong error code: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {v}"
        );
        v
    }
}

/// One invocation: command, env and config.
#[derive(Debug, Clone)]
pub struct Call {
    /// Environment variables to set (CNI_* and others); the rest of the environment is cleared.
    pub env: Vec<(String, String)>,
    /// Bytes for stdin.
    pub stdin: Vec<u8>,
}

impl Call {
    /// A call with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH set.
    pub fn new(
        command: &str,
        container_id: &str,
        netns: &str,
        ifname: &str,
        config: &Value,
    ) -> Call {
        Call {
            env: vec![
                ("CNI_COMMAND".into(), command.into()),
                ("CNI_CONTAINERID".into(), container_id.into()),
                ("CNI_NETNS".into(), netns.into()),
                ("CNI_IFNAME".into(), ifname.into()),
                ("CNI_PATH".into(), crate::cni_path()),
            ],
            stdin: serde_json::to_vec(config).expect("config"),
        }
    }

    /// Sets (or replaces) one env var.
    pub fn env(mut self, key: &str, value: &str) -> Call {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes one env var.
    pub fn without(mut self, key: &str) -> Call {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Replaces stdin with raw bytes.
    pub fn stdin_raw(mut self, bytes: &[u8]) -> Call {
        self.stdin = bytes.to_vec();
        self
    }

    /// Runs the binary and collects its outcome.
    pub fn run(&self, binary: &Path) -> Outcome {
        self.collect(self.spawn(binary))
    }

    /// Runs the binary inside the named netns (`ip netns exec <netns> <binary>`), as on that node.
    pub fn run_in(&self, binary: &Path, netns: &str) -> Outcome {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(binary);
        self.collect(self.start(cmd, binary))
    }

    /// Starts the binary with piped stdio without writing stdin (for kill tests).
    pub fn spawn(&self, binary: &Path) -> std::process::Child {
        self.start(Command::new(binary), binary)
    }

    fn start(&self, mut cmd: Command, binary: &Path) -> std::process::Child {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A binary a test has just copied can be busy for a moment (ETXTBSY): another test thread's
        // fork may still hold the copy's write descriptor until its exec closes it. Try again briefly.
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Ok(child) => return child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("spawn {}: {e}", binary.display()),
            }
        }
    }

    /// Writes stdin, waits and collects the outcome.
    fn collect(&self, mut child: std::process::Child) -> Outcome {
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(&self.stdin);
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        Outcome {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
