//! A real `cas-node demo` process for integration tests: embedded S3, index, HTTP API.

#![allow(dead_code)]

use std::collections::BTreeSet;
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
    /// The node's gRPC API, `grpc://host:port`.
    pub grpc_endpoint: String,
    /// The external S3 server, when the node does not use its embedded one.
    pub s3: Option<ExternalS3>,
    /// Environment of the node process (S3 settings, overrides).
    env: Vec<(String, String)>,
    /// A write-scoped token.
    pub token: String,
    _dir: Option<tempfile::TempDir>,
}

/// An external S3 server for a demo node: the Garage server `scripts/test.sh` starts
/// (`GARAGE_*` variables), under a key prefix of its own.
#[derive(Clone, Debug)]
pub struct ExternalS3 {
    vars: Vec<(String, String)>,
}

impl ExternalS3 {
    /// The S3 server `settings` name, reached at `endpoint` (e.g. a proxy in front of it).
    pub fn at(settings: &cas_node::store::S3Settings, endpoint: &str) -> Self {
        let vars = [
            ("CAS_NODE__S3__ENDPOINT", endpoint.to_owned()),
            ("CAS_NODE__S3__REGION", settings.region.clone()),
            ("CAS_NODE__S3__BUCKET", settings.bucket.clone()),
            (
                "CAS_NODE__S3__ACCESS_KEY_ID",
                settings.access_key_id.clone(),
            ),
            (
                "CAS_NODE__S3__SECRET_ACCESS_KEY",
                settings.secret_access_key.clone(),
            ),
            ("CAS_NODE__S3__FORCE_PATH_STYLE", "true".to_owned()),
            ("CAS_NODE__S3__KEY_PREFIX", "demo/".to_owned()),
        ];
        ExternalS3 {
            vars: vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// The Garage server named by `GARAGE_ENDPOINT` and friends, or `None` (with a
    /// note on stderr) when there is none.
    pub fn garage() -> Option<Self> {
        let Ok(endpoint) = std::env::var("GARAGE_ENDPOINT") else {
            eprintln!("skipped: GARAGE_ENDPOINT is not set, so there is no Garage to test against");
            return None;
        };
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("GARAGE_ENDPOINT is set, so {name} must be too"))
        };
        let prefix = format!("demo-{}-{}/", std::process::id(), rand::random::<u64>());
        let vars = [
            ("CAS_NODE__S3__ENDPOINT", endpoint),
            (
                "CAS_NODE__S3__REGION",
                std::env::var("GARAGE_REGION").unwrap_or_else(|_| "garage".to_owned()),
            ),
            ("CAS_NODE__S3__BUCKET", var("GARAGE_DEFAULT_BUCKET")),
            (
                "CAS_NODE__S3__ACCESS_KEY_ID",
                var("GARAGE_DEFAULT_ACCESS_KEY"),
            ),
            (
                "CAS_NODE__S3__SECRET_ACCESS_KEY",
                var("GARAGE_DEFAULT_SECRET_KEY"),
            ),
            ("CAS_NODE__S3__FORCE_PATH_STYLE", "true".to_owned()),
            ("CAS_NODE__S3__KEY_PREFIX", prefix),
        ];
        Some(ExternalS3 {
            vars: vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
    }
}

fn spawn(data_dir: &Path, state_file: &Path, env: &[(String, String)]) -> Child {
    let _ = std::fs::remove_file(state_file);
    Command::new(env!("CARGO_BIN_EXE_cas-node"))
        .envs(env.iter().cloned())
        .arg("demo")
        .arg("--layout")
        .arg("us-east-1=1")
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

/// What a demo node's state file says: HTTP endpoint, gRPC endpoint, token.
struct State {
    endpoint: String,
    grpc_endpoint: String,
    token: String,
}

fn wait_state(child: &mut Child, state_file: &Path) -> State {
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
            let grpc_endpoint = v["grpc_endpoints"]["us-east-1"][0]
                .as_str()
                .expect("gRPC endpoint")
                .to_owned();
            let token = v["token"].as_str().expect("token").to_owned();
            return State {
                endpoint,
                grpc_endpoint,
                token,
            };
        }
        assert!(
            Instant::now() < deadline,
            "cas-node demo did not serve within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl DemoNode {
    /// Starts a node on a fresh data directory, with its embedded S3 server.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a node on a fresh data directory, storing into `s3` when given.
    pub fn start_with(s3: Option<ExternalS3>) -> Self {
        Self::launch(s3, &[])
    }

    /// Starts a node with configuration overrides (`CAS_NODE__...` variables).
    pub fn start_with_env(overrides: &[(&str, &str)]) -> Self {
        Self::launch(None, overrides)
    }

    fn launch(s3: Option<ExternalS3>, overrides: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let state_file = dir.path().join("state.json");
        let mut env = s3.as_ref().map(|s| s.vars.clone()).unwrap_or_default();
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut child = spawn(&data_dir, &state_file, &env);
        let state = wait_state(&mut child, &state_file);
        DemoNode {
            child: Some(child),
            data_dir,
            state_file,
            endpoint: state.endpoint,
            grpc_endpoint: state.grpc_endpoint,
            s3,
            env,
            token: state.token,
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
        let mut child = spawn(&self.data_dir, &self.state_file, &self.env);
        let state = wait_state(&mut child, &self.state_file);
        self.endpoint = state.endpoint;
        self.grpc_endpoint = state.grpc_endpoint;
        self.token = state.token;
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

    /// A write token signed with this node's secret that expired an hour ago.
    pub fn expired_token(&self) -> String {
        let secret = std::fs::read_to_string(self.data_dir.join("token-secret")).expect("secret");
        let tokens = cas_node::auth::Tokens::new(&cas_node::config::Secret::new(secret.trim()))
            .expect("tokens");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        tokens
            .issue_at(
                "test",
                [cas_node::auth::Scope::Write],
                Duration::from_secs(60),
                now - 3_600,
            )
            .expect("issue")
            .token
    }

    /// The embedded S3 server's data root (objects are plain files under it).
    pub fn s3_root(&self) -> PathBuf {
        assert!(
            self.s3.is_none(),
            "this node stores into an external S3 server"
        );
        self.data_dir.join("s3")
    }

    /// Every object file under the embedded S3 root (relative paths).
    pub fn s3_objects(&self) -> BTreeSet<String> {
        files_under(&self.s3_root())
    }

    /// The stored object of xorb `hash` (its bytes as the embedded S3 server holds them).
    pub fn stored_xorb(&self, hash: &cas_core::hash::MerkleHash) -> Vec<u8> {
        let root = self.s3_root();
        let path = xorb_object(&root, hash).expect("the xorb is stored");
        std::fs::read(root.join(path)).expect("read stored xorb")
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every file under `root`, as paths relative to it (an s3s-fs root holds its
/// objects, and its multipart uploads' state, as plain files).
pub fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The file of xorb `hash`'s object under the s3s-fs root `root` (relative),
/// if it is stored: its key is the node's own ([`cas_node::store::keys::xorb_key`]).
pub fn xorb_object(root: &Path, hash: &cas_core::hash::MerkleHash) -> Option<String> {
    let key = cas_node::store::keys::xorb_key(hash);
    files_under(root).into_iter().find(|p| p.ends_with(&key))
}
