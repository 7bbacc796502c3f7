//! The client gRPC API (`cas.api.v1.Cas`, see `proto/`), a thin adapter over the
//! service: batched chunk and xorb lookups, streamed xorb and shard uploads,
//! reconstructions. [`peer`] is the node-to-node API of the index group, [`admin`]
//! the operator API.
//!
//! Authentication: `authorization: Bearer <token>` metadata. Errors carry the gRPC code
//! the service error maps to, and its stable code in the `x-cas-error-code` metadata.

pub mod admin;
pub mod peer;

use std::future::Future;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cas_core::hash::MerkleHash;
use cas_proto::api::cas_server::{Cas, CasServer};
use cas_proto::api::{
    FetchRange, GetReconstructionRequest, HasXorbsRequest, HasXorbsResponse, QueryChunksRequest,
    QueryChunksResponse, Reconstruction, ReconstructionTerm, RegisterFilesRequest,
    RegisterFilesResponse, UploadXorbRequest, UploadXorbResponse, XorbFetch,
};
use futures::StreamExt as _;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Claims, Scope, Tokens};
use crate::index::IndexError;
use crate::service::{ByteRange, Caller, CasService, ServiceError};
use crate::telemetry::metrics::record_request;

/// Metadata key carrying the stable error code.
pub const ERROR_CODE_METADATA: &str = "x-cas-error-code";

/// The gRPC front end.
#[derive(Clone)]
pub struct GrpcApi {
    service: CasService,
    tokens: Tokens,
}

impl GrpcApi {
    /// The API over `service`, verifying tokens with `tokens`.
    pub fn new(service: CasService, tokens: Tokens) -> Self {
        GrpcApi { service, tokens }
    }

    /// The tonic service to mount, with message size limits fitting a shard part.
    pub fn into_server(self) -> CasServer<Self> {
        CasServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn authorize<T>(&self, req: &Request<T>, scope: Scope) -> Result<Caller, Status> {
        let claims = authorize(&self.tokens, req, scope)?;
        Ok(Caller {
            subject: claims.sub,
        })
    }
}

/// Largest message either side sends (uploads stream in parts of at most this).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Metadata key carrying the leader's gRPC address when a request needs the leader.
pub const LEADER_METADATA: &str = "x-cas-leader";

/// A status with `code` and `message`, and the stable error code in the metadata:
/// how every gRPC front end of the node reports an error.
pub fn coded(code: tonic::Code, stable: &str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message.into());
    if let Ok(v) = stable.parse() {
        s.metadata_mut().insert(ERROR_CODE_METADATA, v);
    }
    s
}

/// A service error as a gRPC status.
pub fn status(e: ServiceError) -> Status {
    let code = tonic::Code::from_i32(e.grpc_code());
    if code == tonic::Code::Internal || code == tonic::Code::Unavailable {
        tracing::error!(code = e.code(), error = %e, "gRPC request failed");
    }
    coded(code, e.code(), e.to_string())
}

/// An index error as a gRPC status; a `NotLeader` carries the leader's address.
pub fn index_status(e: IndexError) -> Status {
    let mut s = coded(e.grpc_code(), e.code(), e.to_string());
    if let IndexError::NotLeader {
        leader_addr: Some(addr),
        ..
    } = &e
        && let Ok(v) = addr.parse()
    {
        s.metadata_mut().insert(LEADER_METADATA, v);
    }
    s
}

/// Checks a request's `authorization: Bearer` metadata for `scope` (every gRPC
/// front end admits callers through here).
pub fn authorize<T>(tokens: &Tokens, req: &Request<T>, scope: Scope) -> Result<Claims, Status> {
    let value = req
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    tokens
        .authorize(value, scope)
        .map_err(|e| status(ServiceError::from(e)))
}

fn hash(bytes: &[u8]) -> Result<MerkleHash, Status> {
    <[u8; 32]>::try_from(bytes).map(MerkleHash).map_err(|_| {
        status(ServiceError::InvalidHash(format!(
            "a hash is 32 bytes, got {}",
            bytes.len()
        )))
    })
}

fn hashes(list: &[Bytes]) -> Result<Vec<MerkleHash>, Status> {
    list.iter().map(|b| hash(b)).collect()
}

/// Runs one call inside a span and records it under `endpoint` (its gRPC code, latency,
/// the request bytes `call` reports and the encoded response size).
async fn observed<T: Message>(
    endpoint: &'static str,
    call: impl Future<Output = Result<(Response<T>, u64), Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.instrument(tracing::info_span!("grpc", endpoint)).await;
    let (code, bytes_in, bytes_out) = match &result {
        Ok((resp, bytes_in)) => (tonic::Code::Ok, *bytes_in, resp.get_ref().encoded_len()),
        Err(s) => (s.code(), 0, 0),
    };
    record_request(
        endpoint,
        &format!("{code:?}"),
        started.elapsed(),
        bytes_in,
        bytes_out as u64,
    );
    result.map(|(resp, _)| resp)
}

/// Collects a streamed body of at most `limit` bytes.
async fn collect<T>(
    mut stream: Streaming<T>,
    what: &'static str,
    limit: u64,
    mut take: impl FnMut(T, bool) -> Result<Bytes, Status>,
) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    let mut first = true;
    while let Some(msg) = stream.message().await? {
        let part = take(msg, first)?;
        first = false;
        if (buf.len() + part.len()) as u64 > limit {
            return Err(status(ServiceError::TooLarge {
                what,
                len: (buf.len() + part.len()) as u64,
                limit,
            }));
        }
        buf.extend_from_slice(&part);
    }
    Ok(buf.freeze())
}

#[tonic::async_trait]
impl Cas for GrpcApi {
    async fn query_chunks(
        &self,
        req: Request<QueryChunksRequest>,
    ) -> Result<Response<QueryChunksResponse>, Status> {
        observed("grpc_query_chunks", async {
            self.authorize(&req, Scope::Read)?;
            let chunks = hashes(&req.get_ref().chunk_hashes)?;
            let (shards, found) = self
                .service
                .query_dedup_batch(&chunks)
                .await
                .map_err(status)?;
            Ok((Response::new(QueryChunksResponse { shards, found }), 0))
        })
        .await
    }

    async fn has_xorbs(
        &self,
        req: Request<HasXorbsRequest>,
    ) -> Result<Response<HasXorbsResponse>, Status> {
        observed("grpc_has_xorbs", async {
            self.authorize(&req, Scope::Read)?;
            let xorbs = hashes(&req.get_ref().xorb_hashes)?;
            let present = self.service.has_xorbs(&xorbs).await.map_err(status)?;
            Ok((Response::new(HasXorbsResponse { present }), 0))
        })
        .await
    }

    async fn upload_xorb(
        &self,
        req: Request<Streaming<UploadXorbRequest>>,
    ) -> Result<Response<UploadXorbResponse>, Status> {
        observed("grpc_upload_xorb", async {
            let caller = self.authorize(&req, Scope::Write)?;
            let mut stream = req.into_inner();
            let first = stream.message().await?.ok_or_else(|| {
                status(ServiceError::bad_request(
                    "empty_upload",
                    "the upload stream was empty",
                ))
            })?;
            let name = hash(&first.hash)?;
            let declared = (first.size > 0).then_some(first.size);
            let mut received = 0u64;
            // A broken stream is answered with its own status, as it would be
            // had it broken on the first message.
            let mut broken: Option<Status> = None;
            let frames = futures::stream::iter([Ok(first.data)])
                .chain(stream.map(|m| {
                    m.map(|m| m.data).map_err(|s| {
                        let e = ServiceError::body_read_failed(s.message());
                        broken = Some(s);
                        e
                    })
                }))
                .inspect(|frame| {
                    if let Ok(data) = frame {
                        received += data.len() as u64;
                    }
                });
            let r = self
                .service
                .upload_xorb_stream(&caller, name, declared, frames)
                .await;
            let r = match (r, broken) {
                (Ok(r), _) => r,
                (Err(_), Some(s)) => return Err(s),
                (Err(e), None) => return Err(status(e)),
            };
            let resp = UploadXorbResponse {
                inserted: r.inserted,
            };
            Ok((Response::new(resp), received))
        })
        .await
    }

    async fn register_files(
        &self,
        req: Request<Streaming<RegisterFilesRequest>>,
    ) -> Result<Response<RegisterFilesResponse>, Status> {
        observed("grpc_register_files", async {
            let caller = self.authorize(&req, Scope::Write)?;
            let body = collect(
                req.into_inner(),
                "shard",
                self.service.limits().max_shard_bytes,
                |m, _| Ok(m.data),
            )
            .await?;
            let len = body.len() as u64;
            let r = self
                .service
                .upload_shard(&caller, body, |_| {})
                .await
                .map_err(status)?;
            let resp = RegisterFilesResponse {
                new_files: r.new_files,
                files: r.files,
            };
            Ok((Response::new(resp), len))
        })
        .await
    }

    async fn get_reconstruction(
        &self,
        req: Request<GetReconstructionRequest>,
    ) -> Result<Response<Reconstruction>, Status> {
        observed("grpc_get_reconstruction", async {
            self.authorize(&req, Scope::Read)?;
            let r = req.get_ref();
            let file = hash(&r.file_hash)?;
            let range = match (r.range_start, r.range_end) {
                (None, None) => None,
                (Some(start), end) => Some(ByteRange {
                    start,
                    end: end.unwrap_or(u64::MAX),
                }),
                (None, Some(_)) => {
                    return Err(status(ServiceError::bad_request(
                        "bad_range",
                        "range_end needs range_start",
                    )));
                }
            };
            let rec = self
                .service
                .reconstruction(&file, range)
                .await
                .map_err(status)?;
            let resp = Reconstruction {
                file_size: rec.file_size,
                offset_into_first_range: rec.offset_into_first_range,
                terms: rec
                    .terms
                    .iter()
                    .map(|t| ReconstructionTerm {
                        xorb_hash: Bytes::copy_from_slice(&t.xorb.0),
                        chunk_start: t.chunks.start,
                        chunk_end: t.chunks.end,
                        unpacked_len: t.unpacked_len,
                    })
                    .collect(),
                fetches: rec
                    .fetches
                    .iter()
                    .map(|f| XorbFetch {
                        xorb_hash: Bytes::copy_from_slice(&f.xorb.0),
                        url: f.url.clone(),
                        ranges: f
                            .ranges
                            .iter()
                            .map(|r| FetchRange {
                                chunk_start: r.chunks.start,
                                chunk_end: r.chunks.end,
                                byte_start: r.bytes.0,
                                byte_end: r.bytes.1,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            Ok((Response::new(resp), 0))
        })
        .await
    }
}
