//! The systems under test, all on 127.0.0.1: a Garage S3 server (started with
//! `scripts/garage.sh`), our node (`cas-node serve` on that Garage, under a key
//! prefix of its own per run) and the Xet reference server (`LocalTestServer` of
//! the published `xet-client` crate, in this process, storing on local disk).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cas_node::auth::{Scope, Tokens};
use cas_node::config::Secret;

/// A Garage server started for the run; stopped when dropped.
pub struct Garage {
    dir: tempfile::TempDir,
    script: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its region name.
    pub region: String,
    /// Access key id.
    pub key: String,
    /// Secret key.
    pub secret: String,
    /// The bucket.
    pub bucket: String,
}

impl Garage {
    /// Installs Garage if needed and starts it with `scripts/garage.sh`.
    pub fn start(repo: &Path) -> anyhow::Result<Self> {
        let script = repo.join("scripts/garage.sh");
        let status = Command::new("bash").arg(&script).arg("install").status()?;
        if !status.success() {
            bail!("scripts/garage.sh install failed");
        }
        let dir = tempfile::Builder::new()
            .prefix("cas-bench-garage-")
            .tempdir()?;
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("scripts/garage.sh start failed");
        }
        let text = String::from_utf8(out.stdout)?;
        let var = |name: &str| -> anyhow::Result<String> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
                .with_context(|| format!("garage.sh did not print {name}"))
        };
        Ok(Garage {
            endpoint: var("GARAGE_ENDPOINT")?,
            region: var("GARAGE_REGION")?,
            key: var("GARAGE_DEFAULT_ACCESS_KEY")?,
            secret: var("GARAGE_DEFAULT_SECRET_KEY")?,
            bucket: var("GARAGE_DEFAULT_BUCKET")?,
            script,
            dir,
        })
    }

    /// An S3 client of this server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_credential_types::Credentials::from_keys(&self.key, &self.secret, None);
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Bytes stored under `prefix` (the sum of the objects' sizes).
    pub async fn bytes_under(&self, prefix: &str) -> anyhow::Result<u64> {
        let client = self.client();
        let mut total = 0u64;
        let mut token = None;
        loop {
            let resp = client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .context("listing the bucket")?;
            total += resp
                .contents()
                .iter()
                .map(|o| o.size().unwrap_or(0) as u64)
                .sum::<u64>();
            match resp.next_continuation_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(total),
            }
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .stderr(Stdio::null())
            .status();
    }
}

/// One `cas-node serve` process on Garage; killed when dropped.
pub struct Node {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `grpc://127.0.0.1:PORT`.
    pub grpc: String,
    /// A write token.
    pub token: String,
    /// The S3 key prefix it stores under.
    pub prefix: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Node {
    /// Starts a node storing under `prefix` in Garage's bucket and waits until it serves.
    pub fn start(exe: &Path, garage: &Garage, prefix: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cas-bench-node-")
            .tempdir()?;
        // A fresh random signing secret per node (the token below is signed with it).
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let (http, grpc) = (free_port()?, free_port()?);
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                r#"[node]
id = 1
region = "us-east-1"
data_dir = {data:?}
[http]
listen = "127.0.0.1:{http}"
[grpc]
listen = "127.0.0.1:{grpc}"
[s3]
endpoint = "{endpoint}"
region = "{region}"
bucket = "{bucket}"
access_key_id = "{key}"
secret_access_key = "{s3secret}"
force_path_style = true
key_prefix = "{prefix}"
[auth]
token_secret = "{secret}"
[telemetry]
log_filter = "warn"
"#,
                data = dir.path().join("data").display().to_string(),
                endpoint = garage.endpoint,
                region = garage.region,
                bucket = garage.bucket,
                key = garage.key,
                s3secret = garage.secret,
            ),
        )?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let token = Tokens::new(&Secret::new(secret))?
            .issue("bench", [Scope::Write], Duration::from_secs(86_400))?
            .token;
        let node = Node {
            child,
            _dir: dir,
            http: format!("http://127.0.0.1:{http}"),
            grpc: format!("grpc://127.0.0.1:{grpc}"),
            token,
            prefix: prefix.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            if Instant::now() > deadline {
                bail!("the node did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(node)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Xet reference server, in this process, storing into its own directory.
pub struct Reference {
    server: xet_client::cas_client::LocalTestServer,
    /// Where it stores (removed when dropped).
    _dir: tempfile::TempDir,
}

impl Reference {
    /// Starts a reference server.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cas-bench-ref-")
            .tempdir()?;
        let server = xet_client::cas_client::LocalTestServerBuilder::new()
            .with_disk_location(dir.path())
            .start()
            .await;
        Ok(Reference { server, _dir: dir })
    }

    /// Its HTTP endpoint.
    pub fn endpoint(&self) -> String {
        self.server.http_endpoint().to_owned()
    }
}
