//! A real `cas-node demo` process for integration tests: embedded S3, index, HTTP API.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running demo node; killed when dropped.
pub struct DemoNode {
    child: Option<Child>,
    /// The directory holding the node's data (kept across restarts).
    pub data_dir: PathBuf,
    state_file: PathBuf,
    /// The node's HTTP base URL.
    pub endpoint: String,
    /// A write-scoped token.
    pub token: String,
    _dir: Option<tempfile::TempDir>,
}

fn spawn(data_dir: &Path, state_file: &Path) -> Child {
    let _ = std::fs::remove_file(state_file);
    Command::new(env!("CARGO_BIN_EXE_cas-node"))
        .arg("demo")
        .arg("--state")
        .arg(state_file)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CAS_NODE__TELEMETRY__LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cas-node starts")
}

fn wait_state(child: &mut Child, state_file: &Path) -> (String, String) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait on cas-node") {
            panic!("cas-node demo exited before serving: {status}");
        }
        if let Ok(text) = std::fs::read_to_string(state_file)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let endpoint = v["endpoints"]["us-east-1"][0]
                .as_str()
                .expect("endpoint")
                .to_owned();
            let token = v["token"].as_str().expect("token").to_owned();
            return (endpoint, token);
        }
        assert!(
            Instant::now() < deadline,
            "cas-node demo did not serve within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl DemoNode {
    /// Starts a node on a fresh data directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let state_file = dir.path().join("state.json");
        let mut child = spawn(&data_dir, &state_file);
        let (endpoint, token) = wait_state(&mut child, &state_file);
        DemoNode {
            child: Some(child),
            data_dir,
            state_file,
            endpoint,
            token,
            _dir: Some(dir),
        }
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it to die.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and waits (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("node is running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("cas-node did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the node again on the same data directory (after `kill9` or `stop`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        let mut child = spawn(&self.data_dir, &self.state_file);
        let (endpoint, token) = wait_state(&mut child, &self.state_file);
        self.endpoint = endpoint;
        self.token = token;
        self.child = Some(child);
    }

    /// Issues a token with `scope` and `ttl` (e.g. "read", "1h") signed by this node's secret.
    pub fn issue_token(&self, scope: &str, ttl: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_cas-node"))
            .args([
                "token",
                "issue",
                "--scope",
                scope,
                "--subject",
                "test",
                "--ttl",
                ttl,
            ])
            .env(
                "CAS_NODE__AUTH__TOKEN_SECRET_FILE",
                self.data_dir.join("token-secret"),
            )
            .output()
            .expect("cas-node token issue runs");
        assert!(
            out.status.success(),
            "token issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// The embedded S3 server's data root (objects are plain files under it).
    pub fn s3_root(&self) -> PathBuf {
        self.data_dir.join("s3")
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.kill9();
    }
}
