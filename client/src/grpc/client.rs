//! [`GrpcClient`]: the calls of `cas.api.v1.Cas`, with retries.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use cas_core::MerkleHash;
use cas_proto::api::cas_client::CasClient;
use cas_proto::api::{
    GetReconstructionRequest, HasXorbsRequest, QueryChunksRequest, RegisterFilesRequest,
    UploadXorbRequest,
};
use futures::{StreamExt, TryStreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::error::GrpcError;
use crate::retry::{Retry, RetryPolicy};
use crate::xet::{
    ByteRange, ChunkRange, Fetcher, HttpRange, ReconstructionTerm, ReconstructionV2, USER_AGENT,
    XorbFetch, XorbRangeDescriptor,
};

/// Most chunk hashes one `QueryChunks` call carries (the server's limit).
pub const MAX_QUERY_BATCH: usize = 1024;

/// Most xorb hashes one `HasXorbs` call carries (the server's limit).
pub const MAX_HAS_XORBS_BATCH: usize = 4096;

/// Size of the parts xorbs and shards are streamed in.
pub const UPLOAD_PART_BYTES: usize = 1 << 20;

/// Largest answer accepted (a reconstruction of a very large file).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Lookup batches in flight at once.
const LOOKUP_CONCURRENCY: usize = 4;

/// Settings of a [`GrpcClient`].
#[derive(Clone, Debug)]
pub struct GrpcClientConfig {
    /// `grpc://host:port` (or `http://host:port`) of the node's gRPC API.
    pub endpoint: String,
    /// Bearer token sent with every call; `None` sends none.
    pub token: Option<String>,
    /// Retries of every call and of every fetch.
    pub retry: RetryPolicy,
    /// Time allowed to open the connection.
    pub connect_timeout: Duration,
    /// Time allowed for one call (uploads of a whole xorb included).
    pub call_timeout: Duration,
    /// Time allowed between two reads of a fetch URL's response.
    pub read_timeout: Duration,
}

impl GrpcClientConfig {
    /// Defaults for `endpoint`: no token, default retries, 10 s connect, 10 min per call.
    pub fn new(endpoint: impl Into<String>) -> Self {
        GrpcClientConfig {
            endpoint: endpoint.into(),
            token: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(600),
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

/// A client of one node's gRPC API; cheap to clone, clones share the connection.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    endpoint: String,
    cas: CasClient<Channel>,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    retry: RetryPolicy,
    fetcher: Fetcher,
}

/// The `http://` URL tonic connects to for a `grpc://` (or `http://`) endpoint.
fn channel_url(endpoint: &str) -> Result<String, GrpcError> {
    let trimmed = endpoint.trim_end_matches('/');
    let rest = if let Some(rest) = trimmed.strip_prefix("grpc://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        rest
    } else {
        return Err(GrpcError::Config(format!(
            "endpoint {endpoint:?}: expected grpc://host:port"
        )));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(GrpcError::Config(format!(
            "endpoint {endpoint:?}: expected grpc://host:port with no path"
        )));
    }
    Ok(format!("http://{rest}"))
}

impl GrpcClient {
    /// A client for `endpoint` with an optional token and default settings.
    pub fn new(endpoint: &str, token: Option<&str>) -> Result<Self, GrpcError> {
        let mut config = GrpcClientConfig::new(endpoint);
        config.token = token.map(str::to_owned);
        Self::with_config(config)
    }

    /// A client with explicit settings. The connection opens on the first call; the
    /// client must be made inside a Tokio runtime (its connection runs as a task).
    pub fn with_config(config: GrpcClientConfig) -> Result<Self, GrpcError> {
        let url = channel_url(&config.endpoint)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(GrpcError::Config(
                "a gRPC client must be made inside a Tokio runtime".into(),
            ));
        }
        let channel = Endpoint::from_shared(url)
            .map_err(|e| GrpcError::Config(format!("endpoint {:?}: {e}", config.endpoint)))?
            .user_agent(USER_AGENT)
            .map_err(|e| GrpcError::Config(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.call_timeout)
            .tcp_nodelay(true)
            // Large windows: xorbs stream at memory speed on a fast link.
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .connect_lazy();
        let cas = CasClient::new(channel)
            .max_decoding_message_size(MAX_ANSWER_BYTES)
            .max_encoding_message_size(UPLOAD_PART_BYTES + (64 << 10));
        let auth = match &config.token {
            Some(t) => {
                let mut v: MetadataValue<_> = format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| GrpcError::Config("the token has invalid characters".into()))?;
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
            .map_err(|e| GrpcError::Config(format!("HTTP client for fetches: {e}")))?;
        Ok(GrpcClient {
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            cas,
            auth,
            retry: config.retry,
            fetcher: Fetcher::new(http, config.retry),
        })
    }

    /// The endpoint, as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The fetcher reading fetch URLs.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// `msg` with the credentials attached.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(auth) = &self.auth {
            req.metadata_mut().insert("authorization", auth.clone());
        }
        req
    }

    fn error(&self, status: &tonic::Status) -> Retry<GrpcError> {
        Retry::from(GrpcError::from_status(&self.endpoint, status))
    }

    /// Global-dedup answers for `chunks`: the keyed shards of every xorb holding
    /// any of them (deduplicated), queried in batches of [`MAX_QUERY_BATCH`].
    pub async fn query_chunks(&self, chunks: &[MerkleHash]) -> Result<Vec<Bytes>, GrpcError> {
        let batches: Vec<Vec<MerkleHash>> =
            chunks.chunks(MAX_QUERY_BATCH).map(<[_]>::to_vec).collect();
        let answers: Vec<Vec<Bytes>> = futures::stream::iter(batches)
            .map(|batch| async move { self.query_batch(&batch).await })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .try_collect()
            .await?;
        let mut seen = std::collections::HashSet::new();
        Ok(answers
            .into_iter()
            .flatten()
            .filter(|s| seen.insert(s.clone()))
            .collect())
    }

    async fn query_batch(&self, batch: &[MerkleHash]) -> Result<Vec<Bytes>, GrpcError> {
        let msg = QueryChunksRequest {
            chunk_hashes: batch.iter().map(|h| Bytes::copy_from_slice(&h.0)).collect(),
        };
        let resp = self
            .retry
            .run(|_| {
                let mut cas = self.cas.clone();
                let req = self.request(msg.clone());
                async move { cas.query_chunks(req).await.map_err(|s| self.error(&s)) }
            })
            .await?
            .into_inner();
        if resp.found.len() != batch.len() {
            return Err(GrpcError::protocol(
                &self.endpoint,
                format!(
                    "asked about {} chunks, got {} answers",
                    batch.len(),
                    resp.found.len()
                ),
            ));
        }
        Ok(resp.shards)
    }

    /// Which of `xorbs` the node stores, in order (batches of [`MAX_HAS_XORBS_BATCH`]).
    pub async fn has_xorbs(&self, xorbs: &[MerkleHash]) -> Result<Vec<bool>, GrpcError> {
        let mut present = Vec::with_capacity(xorbs.len());
        for batch in xorbs.chunks(MAX_HAS_XORBS_BATCH) {
            let msg = HasXorbsRequest {
                xorb_hashes: batch.iter().map(|h| Bytes::copy_from_slice(&h.0)).collect(),
            };
            let resp = self
                .retry
                .run(|_| {
                    let mut cas = self.cas.clone();
                    let req = self.request(msg.clone());
                    async move { cas.has_xorbs(req).await.map_err(|s| self.error(&s)) }
                })
                .await?
                .into_inner();
            if resp.present.len() != batch.len() {
                return Err(GrpcError::protocol(
                    &self.endpoint,
                    format!(
                        "asked about {} xorbs, got {} answers",
                        batch.len(),
                        resp.present.len()
                    ),
                ));
            }
            present.extend(resp.present);
        }
        Ok(present)
    }

    /// Uploads a serialized xorb in parts of [`UPLOAD_PART_BYTES`]; `false` if the
    /// node already had it.
    pub async fn upload_xorb(&self, hash: &MerkleHash, bytes: Bytes) -> Result<bool, GrpcError> {
        let name = Bytes::copy_from_slice(&hash.0);
        let resp = self
            .retry
            .run(|_| {
                let mut cas = self.cas.clone();
                let parts: Vec<UploadXorbRequest> = parts(&bytes)
                    .enumerate()
                    .map(|(i, data)| UploadXorbRequest {
                        hash: if i == 0 { name.clone() } else { Bytes::new() },
                        data,
                        size: if i == 0 { bytes.len() as u64 } else { 0 },
                    })
                    .collect();
                let req = self.request(futures::stream::iter(parts));
                async move { cas.upload_xorb(req).await.map_err(|s| self.error(&s)) }
            })
            .await?;
        Ok(resp.into_inner().inserted)
    }

    /// Registers the files of a shard (without footer), streamed in parts; returns
    /// `(new files, files in the shard)`.
    pub async fn register_files(&self, shard: Bytes) -> Result<(u32, u32), GrpcError> {
        let resp = self
            .retry
            .run(|_| {
                let mut cas = self.cas.clone();
                let parts: Vec<RegisterFilesRequest> = parts(&shard)
                    .map(|data| RegisterFilesRequest { data })
                    .collect();
                let req = self.request(futures::stream::iter(parts));
                async move { cas.register_files(req).await.map_err(|s| self.error(&s)) }
            })
            .await?
            .into_inner();
        Ok((resp.new_files, resp.files))
    }

    /// How to rebuild a file or a byte range of it, in the shape of a v2 reconstruction.
    pub async fn reconstruction(
        &self,
        file_hash: &MerkleHash,
        range: Option<ByteRange>,
    ) -> Result<ReconstructionV2, GrpcError> {
        let msg = GetReconstructionRequest {
            file_hash: Bytes::copy_from_slice(&file_hash.0),
            range_start: range.map(|r| r.start()),
            range_end: range.and_then(|r| r.end()).map(|end| end.saturating_sub(1)),
        };
        let resp = self
            .retry
            .run(|_| {
                let mut cas = self.cas.clone();
                let req = self.request(msg.clone());
                async move {
                    cas.get_reconstruction(req)
                        .await
                        .map_err(|s| self.error(&s))
                }
            })
            .await?
            .into_inner();
        self.to_v2(resp)
    }

    /// Converts a protobuf reconstruction, checking every hash.
    fn to_v2(&self, r: cas_proto::api::Reconstruction) -> Result<ReconstructionV2, GrpcError> {
        let hash = |b: &[u8]| {
            <[u8; 32]>::try_from(b).map(MerkleHash).map_err(|_| {
                GrpcError::protocol(&self.endpoint, format!("a hash of {} bytes", b.len()))
            })
        };
        let terms = r
            .terms
            .iter()
            .map(|t| {
                Ok(ReconstructionTerm {
                    hash: hash(&t.xorb_hash)?,
                    unpacked_length: t.unpacked_len,
                    range: ChunkRange {
                        start: t.chunk_start,
                        end: t.chunk_end,
                    },
                })
            })
            .collect::<Result<Vec<_>, GrpcError>>()?;
        let mut xorbs: HashMap<MerkleHash, Vec<XorbFetch>> = HashMap::new();
        for f in r.fetches {
            xorbs
                .entry(hash(&f.xorb_hash)?)
                .or_default()
                .push(XorbFetch {
                    url: f.url,
                    ranges: f
                        .ranges
                        .iter()
                        .map(|r| XorbRangeDescriptor {
                            chunks: ChunkRange {
                                start: r.chunk_start,
                                end: r.chunk_end,
                            },
                            bytes: HttpRange {
                                start: r.byte_start,
                                end: r.byte_end,
                            },
                        })
                        .collect(),
                });
        }
        Ok(ReconstructionV2 {
            offset_into_first_range: r.offset_into_first_range,
            terms,
            xorbs,
        })
    }
}

/// `bytes` cut into parts of at most [`UPLOAD_PART_BYTES`] (one empty part for no bytes).
fn parts(bytes: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let n = bytes.len().div_ceil(UPLOAD_PART_BYTES).max(1);
    (0..n).map(move |i| {
        let start = i * UPLOAD_PART_BYTES;
        bytes.slice(start..(start + UPLOAD_PART_BYTES).min(bytes.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_are_grpc_urls_without_paths() {
        assert_eq!(
            channel_url("grpc://127.0.0.1:5/").unwrap(),
            "http://127.0.0.1:5"
        );
        assert_eq!(channel_url("http://h:5").unwrap(), "http://h:5");
        for bad in [
            "grpcs://h:5",
            "h:5",
            "grpc://",
            "grpc://h:5/x",
            "https://h:5",
        ] {
            assert!(
                matches!(channel_url(bad), Err(GrpcError::Config(_))),
                "{bad}"
            );
        }
        assert!(GrpcClient::new("grpc://127.0.0.1:1", Some("t")).is_ok());
        assert!(matches!(
            GrpcClient::new("grpc://127.0.0.1:1", Some("bad\ntoken")),
            Err(GrpcError::Config(_))
        ));
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            GrpcClient::new("grpc://127.0.0.1:1", None),
            Err(GrpcError::Config(m)) if m.contains("Tokio runtime")
        ));
    }

    #[test]
    fn parts_cover_the_bytes_in_order() {
        for len in [
            0,
            1,
            UPLOAD_PART_BYTES - 1,
            UPLOAD_PART_BYTES,
            3 * UPLOAD_PART_BYTES + 7,
        ] {
            let b = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let p: Vec<Bytes> = parts(&b).collect();
            assert_eq!(p.len(), len.div_ceil(UPLOAD_PART_BYTES).max(1));
            assert!(p.iter().all(|x| x.len() <= UPLOAD_PART_BYTES));
            assert_eq!(p.concat(), b.to_vec());
        }
    }
}
