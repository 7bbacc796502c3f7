//! [`XetClient`]: the requests of the Xet CAS API, with retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cas_core::MerkleHash;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

use super::error::XetError;
use super::fetch::Fetcher;
use super::ndjson::{FrameError, FrameReader};
use super::range::ByteRange;
use super::types::{
    ReconstructionV1, ReconstructionV2, ShardUploadOutcome, ShardUploadResponseV1,
    XorbUploadResponse,
};
use crate::retry::{Retry, RetryPolicy};

/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!("cas/", env!("CARGO_PKG_VERSION"));

/// The header naming the client session.
pub const SESSION_ID_HEADER: &str = "X-Xet-Session-Id";

/// Prefix of global-dedup queries, as the spec names it.
pub const DEDUP_PREFIX: &str = "default-merkledb";

/// Prefix of xorb uploads.
pub const XORB_PREFIX: &str = "default";

/// Largest JSON answer read into memory (reconstructions of very large files included).
const MAX_JSON_BYTES: usize = 256 << 20;

/// Settings of a [`XetClient`].
#[derive(Clone, Debug)]
pub struct XetClientConfig {
    /// Base URL of the CAS API (paths such as `/v1/xorbs/...` are appended).
    pub endpoint: String,
    /// Bearer token sent to CAS endpoints (never to fetch URLs); `None` sends none.
    pub token: Option<String>,
    /// Retries of every request.
    pub retry: RetryPolicy,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed between two reads of a response (not a limit on the whole transfer).
    pub read_timeout: Duration,
}

impl XetClientConfig {
    /// Defaults for `endpoint`: no token, [`RetryPolicy::default`], 10 s connect, 120 s read timeout.
    pub fn new(endpoint: impl Into<String>) -> Self {
        XetClientConfig {
            endpoint: endpoint.into(),
            token: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
        }
    }

    /// The same settings with a bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The same settings with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Shared state of a client and its clones.
#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    fetcher: Fetcher,
    endpoint: String,
    auth: Option<HeaderValue>,
    session_id: String,
    retry: RetryPolicy,
    /// Set once `/v2/shards` answered 404 or 501: use `/v1/shards` from then on.
    shards_v1: AtomicBool,
    /// Set once `/v2/reconstructions` answered 501: use v1 from then on.
    reconstructions_v1: AtomicBool,
}

/// A client of one Xet CAS server; cheap to clone, clones share connections and state.
#[derive(Clone, Debug)]
pub struct XetClient {
    inner: Arc<Inner>,
}

/// How to send a request body.
#[derive(Clone)]
enum Body {
    None,
    Bytes(Bytes),
}

impl XetClient {
    /// A client for `endpoint` with an optional bearer token and default settings.
    pub fn new(endpoint: &str, token: Option<&str>) -> Result<Self, XetError> {
        let mut config = XetClientConfig::new(endpoint);
        config.token = token.map(str::to_string);
        Self::with_config(config)
    }

    /// A client with explicit settings.
    pub fn with_config(config: XetClientConfig) -> Result<Self, XetError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&endpoint)
            .map_err(|e| XetError::Config(format!("endpoint {endpoint:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(XetError::Config(format!(
                "endpoint {endpoint:?}: expected an http:// or https:// URL"
            )));
        }
        let auth = match &config.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| XetError::Config("the token has invalid characters".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(|e| XetError::Config(format!("HTTP client: {e}")))?;
        Ok(XetClient {
            inner: Arc::new(Inner {
                fetcher: Fetcher::new(http.clone(), config.retry),
                http,
                endpoint,
                auth,
                session_id: uuid::Uuid::now_v7().to_string(),
                retry: config.retry,
                shards_v1: AtomicBool::new(false),
                reconstructions_v1: AtomicBool::new(false),
            }),
        })
    }

    /// The CAS base URL, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The session id sent in `X-Xet-Session-Id`.
    pub fn session_id(&self) -> &str {
        &self.inner.session_id
    }

    /// The retry policy of every request.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// Whether shard uploads have fallen back to `POST /v1/shards`.
    pub fn uses_v1_shards(&self) -> bool {
        self.inner.shards_v1.load(Ordering::Relaxed)
    }

    /// Whether reconstructions have fallen back to `GET /v1/reconstructions`.
    pub fn uses_v1_reconstructions(&self) -> bool {
        self.inner.reconstructions_v1.load(Ordering::Relaxed)
    }

    /// The full URL of a CAS API path.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.endpoint)
    }

    /// Sends one CAS API request (credentials, session id) and returns a success response.
    async fn send_cas(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response, Retry<XetError>> {
        let mut req = self
            .inner
            .http
            .request(method, url)
            .headers(headers)
            .header(SESSION_ID_HEADER, &self.inner.session_id);
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Body::Bytes(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| XetError::transport(url, e))?;
        check_status(url, resp).await
    }

    /// `GET /v1/chunks/default-merkledb/{hash}`: the shard answering a global-dedup
    /// query, or `None` if the server does not track the chunk (404).
    pub async fn query_dedup(&self, chunk_hash: &MerkleHash) -> Result<Option<Vec<u8>>, XetError> {
        let url = self.url(&format!("/v1/chunks/{DEDUP_PREFIX}/{chunk_hash}"));
        let result = self
            .inner
            .retry
            .run(|_| async {
                let resp = self
                    .send_cas(reqwest::Method::GET, &url, HeaderMap::new(), Body::None)
                    .await?;
                Ok(read_body(&url, resp, cas_core::constants::MAX_SHARD_BYTES).await?)
            })
            .await;
        match result {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/xorbs/default/{hash}`: uploads a serialized xorb; `false` if the server already had it.
    pub async fn upload_xorb(&self, hash: &MerkleHash, bytes: Bytes) -> Result<bool, XetError> {
        let url = self.url(&format!("/v1/xorbs/{XORB_PREFIX}/{hash}"));
        let resp: XorbUploadResponse = self
            .inner
            .retry
            .run(|_| {
                let body = Body::Bytes(bytes.clone());
                async {
                    let resp = self
                        .send_cas(reqwest::Method::POST, &url, HeaderMap::new(), body)
                        .await?;
                    Ok(read_json(&url, resp).await?)
                }
            })
            .await?;
        Ok(resp.was_inserted)
    }

    /// Registers a shard (without footer): `POST /v2/shards`, reading its NDJSON
    /// frames up to the terminal one; falls back to `POST /v1/shards` (for this
    /// client and its clones) when v2 answers 404 or 501.
    pub async fn upload_shard(&self, bytes: Bytes) -> Result<ShardUploadOutcome, XetError> {
        if !self.uses_v1_shards() {
            match self.upload_shard_v2(&bytes).await {
                Err(e)
                    if matches!(
                        e.status(),
                        Some(StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED)
                    ) =>
                {
                    self.inner.shards_v1.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.upload_shard_v1(&bytes).await
    }

    /// `POST /v2/shards`, retried as a whole on retryable failures and error frames.
    async fn upload_shard_v2(&self, bytes: &Bytes) -> Result<ShardUploadOutcome, XetError> {
        let url = self.url("/v2/shards");
        self.inner
            .retry
            .run(|_| {
                let body = Body::Bytes(bytes.clone());
                let url = &url;
                async move {
                    let mut resp = self
                        .send_cas(reqwest::Method::POST, url, HeaderMap::new(), body)
                        .await?;
                    let mut reader = FrameReader::new();
                    loop {
                        match resp.chunk().await {
                            Ok(Some(chunk)) => {
                                if let Some(done) = reader.feed(&chunk) {
                                    return Ok(done.map_err(|e| frame_error(url, e))?);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Err(XetError::transport(url, e).into()),
                        }
                    }
                    Ok(reader.finish().map_err(|e| frame_error(url, e))?)
                }
            })
            .await
    }

    /// `POST /v1/shards`.
    async fn upload_shard_v1(&self, bytes: &Bytes) -> Result<ShardUploadOutcome, XetError> {
        let url = self.url("/v1/shards");
        let resp: ShardUploadResponseV1 = self
            .inner
            .retry
            .run(|_| {
                let body = Body::Bytes(bytes.clone());
                async {
                    let resp = self
                        .send_cas(reqwest::Method::POST, &url, HeaderMap::new(), body)
                        .await?;
                    Ok(read_json(&url, resp).await?)
                }
            })
            .await?;
        Ok(ShardUploadOutcome::from_result(Some(resp.result)))
    }

    /// The reconstruction of a file, or of a byte range of it: `GET /v2/reconstructions/{hash}`
    /// with `Range: bytes=S-E`; falls back to v1 (for this client and its clones) when v2
    /// answers 501. A v1 answer is returned in the v2 shape.
    pub async fn reconstruction(
        &self,
        file_hash: &MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, XetError> {
        let mut headers = HeaderMap::new();
        if let Some(r) = range {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&r.header_value()).expect("ASCII header value"),
            );
        }
        let result = self.reconstruction_any(file_hash, &headers).await;
        match result {
            // Some servers answer 416 for a file they do not know; ask whether it exists.
            Err(e) if e.status() == Some(StatusCode::RANGE_NOT_SATISFIABLE) => {
                match self.file_size(file_hash).await {
                    Err(not_found) if not_found.is_not_found() => Err(not_found),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// The reconstruction from v2, or from v1 once v2 answered 501.
    async fn reconstruction_any(
        &self,
        file_hash: &MerkleHash,
        headers: &HeaderMap,
    ) -> Result<ReconstructionV2, XetError> {
        if !self.uses_v1_reconstructions() {
            let url = self.url(&format!("/v2/reconstructions/{file_hash}"));
            match self.get_json::<ReconstructionV2>(&url, headers).await {
                Err(e) if e.status() == Some(StatusCode::NOT_IMPLEMENTED) => {
                    self.inner.reconstructions_v1.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let url = self.url(&format!("/v1/reconstructions/{file_hash}"));
        self.get_json::<ReconstructionV1>(&url, headers)
            .await
            .map(ReconstructionV2::from)
    }

    /// `HEAD /v1/files/{hash}`: the size of a file the server knows ([`XetError::NotFound`] if it does not).
    pub async fn file_size(&self, file_hash: &MerkleHash) -> Result<u64, XetError> {
        let url = self.url(&format!("/v1/files/{file_hash}"));
        self.inner
            .retry
            .run(|_| async {
                let resp = self
                    .send_cas(reqwest::Method::HEAD, &url, HeaderMap::new(), Body::None)
                    .await?;
                let size = resp
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| XetError::protocol(&url, "no Content-Length in the answer"))?;
                Ok(size)
            })
            .await
    }

    /// A retried CAS GET whose answer is JSON.
    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<T, XetError> {
        self.inner
            .retry
            .run(|_| async {
                let resp = self
                    .send_cas(reqwest::Method::GET, url, headers.clone(), Body::None)
                    .await?;
                Ok(read_json(url, resp).await?)
            })
            .await
    }

    /// GETs bytes `start..=end` (inclusive) of a fetch URL ([`Fetcher::fetch_range`]).
    pub async fn fetch_range(&self, url: &str, start: u64, end: u64) -> Result<Bytes, XetError> {
        self.inner.fetcher.fetch_range(url, start, end).await
    }

    /// The fetcher this client reads fetch URLs with.
    pub fn fetcher(&self) -> &Fetcher {
        &self.inner.fetcher
    }
}

/// Turns an NDJSON failure into the transport error.
fn frame_error(url: &str, e: FrameError) -> XetError {
    match e {
        FrameError::Rejected { message, retryable } => {
            XetError::ShardRejected { message, retryable }
        }
        FrameError::MissingTerminal => XetError::incomplete(url, e.to_string()),
        FrameError::Malformed(m) => XetError::protocol(url, m),
    }
}

/// Passes a success response through; reads an error response into a [`Retry`].
pub(super) async fn check_status(url: &str, resp: Response) -> Result<Response, Retry<XetError>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // The error body is informative only: a failure to read it leaves the message empty.
    let body = read_body(url, resp, 64 << 10).await.unwrap_or_default();
    Err(Retry {
        error: XetError::from_status(status, url, &body),
        after,
    })
}

/// Reads a response body of at most `limit` bytes.
pub(super) async fn read_body(
    url: &str,
    mut resp: Response,
    limit: usize,
) -> Result<Vec<u8>, XetError> {
    let mut out = Vec::with_capacity(
        resp.content_length()
            .map_or(0, |l| l.min(limit as u64) as usize),
    );
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(XetError::protocol(
                        url,
                        format!("the response is longer than {limit} bytes"),
                    ));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(XetError::transport(url, e)),
        }
    }
}

/// Reads and parses a JSON response.
async fn read_json<T: DeserializeOwned>(url: &str, resp: Response) -> Result<T, XetError> {
    let body = read_body(url, resp, MAX_JSON_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| XetError::protocol(url, format!("bad JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_and_token_validation() {
        assert!(XetClient::new("http://127.0.0.1:1/", None).is_ok());
        let c = XetClient::new("http://127.0.0.1:1///", Some("t")).unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:1");
        assert!(matches!(
            XetClient::new("ftp://x", None),
            Err(XetError::Config(_))
        ));
        assert!(matches!(
            XetClient::new("not a url", None),
            Err(XetError::Config(_))
        ));
        assert!(matches!(
            XetClient::new("http://h", Some("bad\ntoken")),
            Err(XetError::Config(_))
        ));
        assert!(USER_AGENT.starts_with("cas/"));
    }
}
