//! The node configuration: a TOML file with environment overrides.
//!
//! # Sources and precedence
//!
//! Built-in defaults (good for one node on a laptop) < the TOML file < environment
//! variables. Every field has a default, so an empty file (or no file) is a valid start;
//! only the token signing secret must be provided outside demo mode.
//!
//! # Environment overrides
//!
//! `CAS_NODE__<SECTION>__<FIELD>=value` sets `<section>.<field>`; names are matched in
//! lower case and `__` (two underscores) separates the levels, so single underscores stay
//! part of a name: `CAS_NODE__S3__ACCESS_KEY_ID` sets `s3.access_key_id`. The value is
//! read as the type of the field it sets (string taken verbatim, integer, boolean); an
//! empty value removes the setting from the file, restoring its default (for an optional
//! field such as `s3.endpoint`: unset). A variable naming an unknown section or field is
//! an error, not silently ignored. Variables that do not start with `CAS_NODE__` are
//! ignored.
//!
//! # Validation
//!
//! Unknown fields are refused by name. After parsing, [`NodeConfig::validated`] checks
//! every field and reports all problems at once, each as `section.field: message`
//! (plus the environment variable when the value came from one).
//!
//! # Adding a field
//!
//! Add it to its section struct with a doc comment, give it a default in that section's
//! `Default` impl, and add its checks to `validate.rs`. Optional (`Option`) fields must
//! be strings, paths, URLs or addresses: the environment override rule takes the type
//! of a field from its default, and an unset option has none (it is read as a string).

mod duration;
mod env;
mod error;
mod secret;
mod validate;
pub use validate::peer_address;

#[cfg(test)]
mod tests;

pub use duration::{DurationError, format_duration, parse_duration, serde_str as duration_str};
pub use error::{ConfigError, FieldError};
pub use secret::{REDACTED, Secret};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "CAS_NODE";
/// Separator between prefix, section and field in an override variable's name.
pub const ENV_SEPARATOR: &str = "__";

/// What the configuration is for; decides which settings are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A real node (or a tool acting for one): a token signing secret is required.
    Serve,
    /// The one-command local demo, which generates its own secret when none is given.
    Demo,
}

/// The whole node configuration; one struct per TOML section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`: who this node is.
    pub node: NodeSection,
    /// `[http]`: the Xet HTTP API.
    pub http: HttpConfig,
    /// `[grpc]`: the gRPC API (client, admin and Raft).
    pub grpc: GrpcConfig,
    /// `[s3]`: the shared object store.
    pub s3: S3Config,
    /// `[auth]`: bearer token signing.
    pub auth: AuthConfig,
    /// `[limits]`: request size limits.
    pub limits: LimitsConfig,
    /// `[cluster]`: how the node takes part in the index group.
    pub cluster: ClusterConfig,
    /// `[telemetry]`: logs and metrics.
    pub telemetry: TelemetryConfig,
}

impl NodeConfig {
    /// Loads defaults, then `path` (if given), then `CAS_NODE__…` variables of this
    /// process, and validates the result for `mode`.
    pub fn load(path: Option<&Path>, mode: Mode) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars_os(), mode)
    }

    /// Like [`NodeConfig::load`] but with the given environment instead of the process's.
    pub fn load_with_env<I, K, V>(
        path: Option<&Path>,
        env: I,
        mode: Mode,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::build(Some((&text, path)), env, mode)
            }
            None => Self::build(None, env, mode),
        }
    }

    /// Parses TOML text, applies the given environment, and validates for `mode`.
    pub fn parse<I, K, V>(toml_text: &str, env: I, mode: Mode) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        Self::build(Some((toml_text, Path::new("<string>"))), env, mode)
    }

    fn build<I, K, V>(file: Option<(&str, &Path)>, env: I, mode: Mode) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut table = match file {
            Some((text, path)) => {
                toml::from_str::<toml::Table>(text).map_err(|e| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string().trim_end().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        let origins = env::apply(&mut table, env)?;
        let annotate = |errors: Vec<FieldError>| {
            ConfigError::Invalid(errors.into_iter().map(|e| origins.annotate(e)).collect())
        };
        let config = Self::from_table(table).map_err(annotate)?;
        config.validated(mode).map_err(|e| match e {
            ConfigError::Invalid(errors) => annotate(errors),
            other => other,
        })
    }

    /// Deserializes section by section, so that a bad value in one section does not
    /// hide the problems of the others (each section reports its first problem).
    fn from_table(mut table: toml::Table) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let config = NodeConfig {
            node: take_section(&mut table, "node", &mut errors),
            http: take_section(&mut table, "http", &mut errors),
            grpc: take_section(&mut table, "grpc", &mut errors),
            s3: take_section(&mut table, "s3", &mut errors),
            auth: take_section(&mut table, "auth", &mut errors),
            limits: take_section(&mut table, "limits", &mut errors),
            cluster: take_section(&mut table, "cluster", &mut errors),
            telemetry: take_section(&mut table, "telemetry", &mut errors),
        };
        let known: Vec<String> = toml::Table::try_from(NodeConfig::default())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        for unknown in table.keys() {
            errors.push(FieldError::new(
                unknown.as_str(),
                format!("unknown section; expected one of {}", known.join(", ")),
            ));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Checks every field for `mode` (reporting all problems at once) and fills in
    /// derived values (`http.public_url` from `http.listen` when unset).
    pub fn validated(mut self, mode: Mode) -> Result<Self, ConfigError> {
        let errors = validate::validate(&self, mode);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        self.http.public_url = Some(self.http.public_url());
        Ok(self)
    }

    /// The effective configuration as TOML, with every secret shown as [`REDACTED`].
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::field("config", e.to_string()))
    }
}

/// Removes and deserializes section `name` (its default when absent or refused).
fn take_section<T: serde::de::DeserializeOwned + Default>(
    table: &mut toml::Table,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> T {
    match table.remove(name).map(toml::Value::try_into) {
        None => T::default(),
        Some(Ok(section)) => section,
        Some(Err(e)) => {
            errors.push(env::field_error(&e, name));
            T::default()
        }
    }
}

/// `[node]`: the node's identity and local state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Cluster-unique node id (the Raft node id); at least 1.
    pub id: u64,
    /// The region (point of presence) this node serves.
    pub region: Region,
    /// Directory for local state (Raft log, index, cache); relative paths are relative
    /// to the working directory.
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: 1,
            region: Region::UsEast1,
            data_dir: PathBuf::from("cas-data"),
        }
    }
}

/// `[http]`: the Xet HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server binds, `IP:PORT`.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Base URL clients reach this node at (`http(s)://host[:port][/path]`), used to
    /// build URLs handed to clients. Unset: `http://<listen>` (not allowed when `listen`
    /// is a wildcard address). No trailing slash after loading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl HttpConfig {
    /// The base URL for client-facing URLs, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
        }
    }
}

/// `[grpc]`: the gRPC API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address the gRPC server binds, `IP:PORT`.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// `HOST:PORT` at which the other nodes reach this node's gRPC API (what it
    /// announces to the cluster); unset means the bound address, which is only
    /// right when `listen` is a specific IP. Required when `listen` is a wildcard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            advertise: None,
        }
    }
}

impl GrpcConfig {
    /// The address other nodes use: `advertise`, or else the bound address `bound`.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| bound.to_string())
    }
}

/// `[s3]`: the shared S3 bucket holding xorbs, shards and snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server; unset means AWS S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region of the bucket (SigV4 signing region).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id; unset means the default AWS credential chain. Set together with
    /// `secret_access_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key; never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Prefix of every object key: empty, or ending in `/` and not starting with `/`.
    pub key_prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`); S3-compatible local servers
    /// (s3s-fs, Garage, MinIO) usually need it.
    pub force_path_style: bool,
    /// Timeout of one S3 request attempt.
    #[serde(with = "duration::serde_str")]
    pub request_timeout: Duration,
    /// Retries after a failed first attempt (0 to 10).
    pub max_retries: u32,
    /// Lifetime of presigned URLs handed to clients (at most 7 days, the SigV4 limit).
    #[serde(with = "duration::serde_str")]
    pub presign_ttl: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".to_owned(),
            bucket: "cas".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            key_prefix: String::new(),
            force_path_style: false,
            request_timeout: Duration::from_secs(60),
            max_retries: 3,
            presign_ttl: Duration::from_secs(3_600),
        }
    }
}

/// `[auth]`: the secret that signs bearer tokens (see [`crate::auth`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The signing secret inline (prefer `token_secret_file` or the
    /// `CAS_NODE__AUTH__TOKEN_SECRET` variable); never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<Secret>,
    /// A file holding the signing secret; surrounding whitespace (a trailing newline)
    /// is ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret_file: Option<PathBuf>,
    /// Longest lifetime a token may be issued with.
    #[serde(with = "duration::serde_str")]
    pub max_token_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: None,
            token_secret_file: None,
            max_token_ttl: Duration::from_secs(30 * 86_400),
        }
    }
}

impl AuthConfig {
    /// The configured signing secret (inline or read from the file), checked for
    /// strength; an error names the field.
    pub fn signing_secret(&self) -> Result<Secret, ConfigError> {
        match validate::resolve_secret(self) {
            Ok(Some(secret)) => Ok(secret),
            Ok(None) => Err(ConfigError::Invalid(vec![validate::missing_secret()])),
            Err(e) => Err(ConfigError::Invalid(vec![e])),
        }
    }
}

/// `[cluster]`: how the node takes part in the index group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// On the first start, with an empty data directory: form a new group of this node
    /// alone (`true`, the default: a single node, or the first node of a cluster), or
    /// wait to be added by the group's leader (`false`: every later node; an operator
    /// adds it with `cas-node admin node add`). Ignored once the node has joined.
    pub bootstrap: bool,
    /// Delay every node-to-node call by the typical round trip between the two
    /// nodes' regions (`regions.md`), to run a three-region cluster on one machine.
    pub simulate_region_latency: bool,
    /// For tests and drills only: a JSON file, read every 100 ms, naming regions to
    /// cut off from the others (`{"isolated": ["ap-southeast-1"]}`); node-to-node
    /// calls across the cut fail as unreachable. Unset: no fault injection.
    pub fault_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            bootstrap: true,
            simulate_region_latency: false,
            fault_file: None,
        }
    }
}

/// `[limits]`: request size limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest serialized xorb accepted in one upload, in bytes.
    pub max_xorb_upload_bytes: u64,
    /// Largest shard accepted in one upload, in bytes.
    pub max_shard_upload_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_xorb_upload_bytes: cas_core::constants::MAX_SERIALIZED_XORB_BYTES as u64,
            max_shard_upload_bytes: cas_core::constants::MAX_SHARD_BYTES as u64,
        }
    }
}

/// `[telemetry]`: logs and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log filter in `tracing` env-filter syntax, e.g. `info` or `info,cas_node=debug`.
    pub log_filter: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Address of the Prometheus metrics endpoint; unset: no metrics endpoint.
    #[serde(
        deserialize_with = "opt_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info".to_owned(),
            log_format: LogFormat::Text,
            metrics_listen: None,
        }
    }
}

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// A region (point of presence) of the cluster; see `regions.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// `us-east-1`: North and South America.
    UsEast1,
    /// `eu-west-3`: Europe, Middle East, Africa.
    EuWest3,
    /// `ap-southeast-1`: Asia and Oceania.
    ApSoutheast1,
}

impl Region {
    /// Every region, in a fixed order.
    pub const ALL: [Region; 3] = [Region::UsEast1, Region::EuWest3, Region::ApSoutheast1];

    /// The region's name, e.g. `eu-west-3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::UsEast1 => "us-east-1",
            Region::EuWest3 => "eu-west-3",
            Region::ApSoutheast1 => "ap-southeast-1",
        }
    }

    /// The typical network round trip between a node here and one in `other`
    /// (`regions.md`): 1 ms within a region, 80 ms us-east-1↔eu-west-3, 150 ms
    /// eu-west-3↔ap-southeast-1, 220 ms us-east-1↔ap-southeast-1. What the latency
    /// simulation injects.
    pub fn round_trip(self, other: Region) -> std::time::Duration {
        use Region::*;
        let ms = match (self, other) {
            (UsEast1, UsEast1) | (EuWest3, EuWest3) | (ApSoutheast1, ApSoutheast1) => 1,
            (UsEast1, EuWest3) | (EuWest3, UsEast1) => 80,
            (EuWest3, ApSoutheast1) | (ApSoutheast1, EuWest3) => 150,
            (UsEast1, ApSoutheast1) | (ApSoutheast1, UsEast1) => 220,
        };
        std::time::Duration::from_millis(ms)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a region (expected one of us-east-1, eu-west-3, ap-southeast-1)")]
pub struct UnknownRegion(pub String);

impl FromStr for Region {
    type Err = UnknownRegion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRegion(s.to_owned()))
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not a socket address (expected IP:PORT, e.g. 127.0.0.1:8080)")
    })
}

fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_socket_addr(&text).map_err(D::Error::custom)
}

fn opt_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_socket_addr(&text).map(Some).map_err(D::Error::custom)
}
